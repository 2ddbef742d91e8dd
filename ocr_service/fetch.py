"""Fetching a document from ``documentUrl``: allow-listed hosts only, bounded in size and time.

The checks, in order: http(s) only, no credentials in the URL, host on the allow-list,
every address the host resolves to is public (unless private addresses are explicitly
allowed), and the connection goes to the address that was checked (so a second DNS
answer cannot swap in 127.0.0.1). Redirects are followed by hand, only to the same host.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import logging
import socket
from dataclasses import dataclass
from typing import BinaryIO

import httpx

from ocr_service.errors import AppError, ErrorCode

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


@dataclass(frozen=True)
class FetchPolicy:
    allowed_hosts: frozenset[str]
    allow_private_addresses: bool
    max_bytes: int
    timeout_s: float
    max_redirects: int


def _refuse(message: str) -> AppError:
    return AppError(ErrorCode.URL_NOT_ALLOWED, message)


class DocumentFetcher:
    def __init__(self, policy: FetchPolicy, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.policy = policy
        self._transport = transport

    def check_url(self, url: str) -> httpx.URL:
        """Refuse a URL on its face (scheme, credentials, host); no network is touched."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise _refuse("documentUrl is not a valid URL.") from exc
        if parsed.scheme not in ("http", "https"):
            raise _refuse("documentUrl must use http or https.")
        if parsed.userinfo:
            raise _refuse("documentUrl must not contain a user name or password.")
        host = parsed.host.lower().rstrip(".")
        if not host:
            raise _refuse("documentUrl has no host.")
        if not self.policy.allowed_hosts:
            raise _refuse("Fetching documents by URL is switched off: no host is allowed (OCR_ALLOWED_PDF_HOSTS).")
        if host not in self.policy.allowed_hosts:
            raise _refuse(f"The host '{host}' is not on the list of allowed document hosts.")
        return parsed

    async def _resolve(self, host: str, port: int) -> IPAddress:
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise AppError(ErrorCode.DOCUMENT_UNREACHABLE, f"The host '{host}' cannot be found.") from exc
            addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        if not self.policy.allow_private_addresses:
            for address in addresses:
                if not _is_public(address):
                    raise _refuse(
                        f"The host '{host}' points to a private or local address; such addresses are not fetched."
                    )
        return addresses[0]

    async def fetch(self, url: str) -> bytes:
        buffer = io.BytesIO()
        await self.fetch_into(url, buffer)
        return buffer.getvalue()

    async def fetch_into(self, url: str, file: BinaryIO) -> int:
        """Download the document into ``file`` as it arrives (never whole in memory); its size."""
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                return await self._fetch(url, file)
        except TimeoutError as exc:
            raise AppError(
                ErrorCode.DOCUMENT_FETCH_TIMEOUT,
                f"The document could not be downloaded within {self.policy.timeout_s:g} seconds.",
            ) from exc

    async def _fetch(self, url: str, file: BinaryIO) -> int:
        current = self.check_url(url)
        origin_host = current.host.lower().rstrip(".")
        timeout = httpx.Timeout(self.policy.timeout_s)
        async with httpx.AsyncClient(
            transport=self._transport, follow_redirects=False, timeout=timeout, trust_env=False
        ) as client:
            for _ in range(self.policy.max_redirects + 1):
                address = await self._resolve(current.host, current.port or (443 if current.scheme == "https" else 80))
                pinned = current.copy_with(host=str(address))
                host_header = current.host if current.port is None else f"{current.host}:{current.port}"
                request = client.build_request(
                    "GET",
                    pinned,
                    headers={"Host": host_header, "Accept": "application/pdf, image/*"},
                    extensions={"sni_hostname": current.host} if current.scheme == "https" else {},
                )
                try:
                    response = await client.send(request, stream=True)
                except httpx.HTTPError as exc:
                    raise AppError(
                        ErrorCode.DOCUMENT_UNREACHABLE, f"The document server could not be reached: {exc}"
                    ) from exc
                try:
                    if response.is_redirect:
                        current = self._follow(current, response, origin_host)
                        continue
                    return await self._read_body(response, file)
                finally:
                    await response.aclose()
        raise AppError(ErrorCode.DOCUMENT_FETCH_FAILED, "The document URL redirects too many times.")

    def _follow(self, current: httpx.URL, response: httpx.Response, origin_host: str) -> httpx.URL:
        location = response.headers.get("location")
        if not location:
            raise AppError(ErrorCode.DOCUMENT_FETCH_FAILED, "The document server sent a redirect without a target.")
        target = current.join(location)
        if target.host.lower().rstrip(".") != origin_host:
            raise _refuse(f"The document URL redirects to another host ('{target.host}'); that is not followed.")
        return self.check_url(str(target))

    async def _read_body(self, response: httpx.Response, file: BinaryIO) -> int:
        if response.status_code >= 500:
            raise AppError(
                ErrorCode.DOCUMENT_UNREACHABLE,
                f"The document server failed with HTTP {response.status_code}.",
            )
        if response.status_code >= 400 or response.status_code != 200:
            raise AppError(
                ErrorCode.DOCUMENT_FETCH_FAILED,
                f"The document server answered HTTP {response.status_code}.",
                details={"status": response.status_code},
            )
        limit = self.policy.max_bytes
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                # A local temporary file: the write lands in the page cache and does not block.
                file.write(chunk)
        except httpx.HTTPError as exc:
            raise AppError(ErrorCode.DOCUMENT_UNREACHABLE, f"The download broke off: {exc}") from exc
        return size


def _too_large(limit: int) -> AppError:
    return AppError(
        ErrorCode.DOCUMENT_TOO_LARGE,
        f"The document is larger than the limit of {limit / 1024 / 1024:g} MB.",
        details={"maxBytes": limit},
    )
