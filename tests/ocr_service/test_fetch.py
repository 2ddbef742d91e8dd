"""documentUrl fetching against a real server on 127.0.0.1: allow-list, redirects, size, time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from ocr_service.errors import AppError, ErrorCode
from ocr_service.fetch import DocumentFetcher, FetchPolicy
from tests.support.servers import FileServer, redirect_to, send_bytes, start_file_server

PDF = b"%PDF-1.7\n" + b"x" * 5000


def slow(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    for _ in range(100):
        handler.wfile.write(b"x" * 10)
        handler.wfile.flush()
        time.sleep(0.1)


def chunked_without_length(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.end_headers()
    handler.wfile.write(b"%PDF-" + b"y" * 20_000)
    handler.close_connection = True


@pytest.fixture
def server() -> Iterator[FileServer]:
    running = start_file_server(
        {
            "/letter.pdf": send_bytes(PDF),
            "/moved": redirect_to("/letter.pdf"),
            "/elsewhere": redirect_to("http://localhost:1/letter.pdf"),
            "/loop": redirect_to("/loop"),
            "/slow": slow,
            "/big": send_bytes(b"%PDF-" + b"z" * 20_000),
            "/nolength": chunked_without_length,
        }
    )
    yield running
    running.stop()


def fetcher(hosts: set[str], *, private: bool = True, max_bytes: int = 10_000, timeout: float = 2.0) -> DocumentFetcher:
    return DocumentFetcher(
        FetchPolicy(
            allowed_hosts=frozenset(hosts),
            allow_private_addresses=private,
            max_bytes=max_bytes,
            timeout_s=timeout,
            max_redirects=3,
        )
    )


def fetch(f: DocumentFetcher, url: str) -> bytes:
    return asyncio.run(f.fetch(url))


def refused(f: DocumentFetcher, url: str) -> AppError:
    with pytest.raises(AppError) as caught:
        fetch(f, url)
    return caught.value


def test_a_document_on_an_allowed_host_is_fetched(server: FileServer) -> None:
    assert fetch(fetcher({"127.0.0.1"}), f"{server.url}/letter.pdf") == PDF


def test_a_host_not_on_the_list_is_refused_and_nothing_is_fetched(server: FileServer) -> None:
    error = refused(fetcher({"archive.example.org"}), f"{server.url}/letter.pdf")
    assert error.code is ErrorCode.URL_NOT_ALLOWED
    assert error.status == 400
    assert server.hits == []


def test_with_no_allowed_hosts_url_fetching_is_off(server: FileServer) -> None:
    error = refused(fetcher(set()), f"{server.url}/letter.pdf")
    assert error.code is ErrorCode.URL_NOT_ALLOWED
    assert "switched off" in error.message
    assert server.hits == []


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/letter.pdf",
        "file:///etc/passwd",
        "http://user:secret@127.0.0.1/letter.pdf",
        "http://127.0.0.1.nip.io/letter.pdf",
        "http://2130706433/letter.pdf",
        "http://[::1]/letter.pdf",
        "not a url at all",
    ],
)
def test_scheme_credential_and_host_tricks_are_refused(server: FileServer, url: str) -> None:
    assert refused(fetcher({"127.0.0.1"}), url).code is ErrorCode.URL_NOT_ALLOWED
    assert server.hits == []


def test_an_allowed_name_that_resolves_to_loopback_is_refused(server: FileServer) -> None:
    error = refused(fetcher({"localhost"}, private=False), f"http://localhost:{server.port}/letter.pdf")
    assert error.code is ErrorCode.URL_NOT_ALLOWED
    assert "private or local" in error.message
    assert server.hits == []


def test_a_redirect_on_the_same_host_is_followed(server: FileServer) -> None:
    assert fetch(fetcher({"127.0.0.1"}), f"{server.url}/moved") == PDF
    assert server.hits == ["/moved", "/letter.pdf"]


def test_a_redirect_to_another_host_is_not_followed(server: FileServer) -> None:
    error = refused(fetcher({"127.0.0.1", "localhost"}), f"{server.url}/elsewhere")
    assert error.code is ErrorCode.URL_NOT_ALLOWED
    assert "another host" in error.message
    assert server.hits == ["/elsewhere"]


def test_endless_redirects_stop(server: FileServer) -> None:
    assert refused(fetcher({"127.0.0.1"}), f"{server.url}/loop").code is ErrorCode.DOCUMENT_FETCH_FAILED
    assert len(server.hits) == 4


def test_a_missing_document_is_the_callers_problem(server: FileServer) -> None:
    error = refused(fetcher({"127.0.0.1"}), f"{server.url}/nothing-here.pdf")
    assert error.code is ErrorCode.DOCUMENT_FETCH_FAILED
    assert error.status == 422


def test_a_declared_oversized_document_is_refused(server: FileServer) -> None:
    assert refused(fetcher({"127.0.0.1"}), f"{server.url}/big").code is ErrorCode.DOCUMENT_TOO_LARGE


def test_an_undeclared_oversized_document_is_cut_off(server: FileServer) -> None:
    assert refused(fetcher({"127.0.0.1"}), f"{server.url}/nolength").code is ErrorCode.DOCUMENT_TOO_LARGE


def test_a_dripping_server_hits_the_overall_time_limit(server: FileServer) -> None:
    started = time.monotonic()
    error = refused(fetcher({"127.0.0.1"}, max_bytes=1_000_000, timeout=1.0), f"{server.url}/slow")
    assert error.code is ErrorCode.DOCUMENT_FETCH_TIMEOUT
    assert error.status == 504
    assert time.monotonic() - started < 8  # the server would drip for 10 s


def test_an_unreachable_server_is_a_gateway_error() -> None:
    error = refused(fetcher({"127.0.0.1"}), "http://127.0.0.1:1/letter.pdf")
    assert error.code is ErrorCode.DOCUMENT_UNREACHABLE
    assert error.status == 502
