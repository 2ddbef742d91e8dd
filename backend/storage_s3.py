"""The same objects as :class:`backend.storage.LocalStorage`, in an S3-compatible bucket (MinIO, AWS S3, ...).

Keys are checked against :data:`backend.storage.KEY` before any call, so a hostile key never
reaches the network. Uploads go through boto3's transfer manager (one PUT for a small
file, a multipart upload in ``APP_S3_PART_SIZE_MIB`` parts for a big one: never the whole
file in memory). :meth:`S3Storage.open` returns a seekable file that reads the object as it
is needed: sequential reads stream one GET's body; a jump elsewhere closes that body (and its
connection) and asks for a range from the new position. Every failure of the store becomes
:class:`StorageUnavailableError` (503 ``STORAGE_UNAVAILABLE``); botocore's standard retry mode
has already retried what is worth retrying.
"""

from __future__ import annotations

import io
import logging
from typing import Any, BinaryIO

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from backend.settings import Settings
from backend.storage import StorageUnavailableError, checked_key, new_key

log = logging.getLogger(__name__)

_MIB = 1024 * 1024
_READ_BUFFER = _MIB
# Seeking forward by at most this much reads on through the open body instead of a new GET.
_SKIP_WITHIN = 256 * 1024
# Parts of one upload in flight at once, and read ahead at most: an upload holds about this many parts.
_UPLOAD_THREADS = 4
_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})
_REFUSED = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "401"})
_FAILURES = (BotoCoreError, ClientError, Boto3Error)


def _status(exc: ClientError) -> tuple[int, str]:
    response: dict[str, Any] = exc.response
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)), str(
        response.get("Error", {}).get("Code")
    )


def _secret(value: Any) -> str | None:
    return None if value is None else str(value.get_secret_value())


def make_client(settings: Settings) -> Any:
    """A boto3 S3 client for the settings (thread-safe; one per storage)."""
    session = boto3.session.Session(
        aws_access_key_id=_secret(settings.s3_access_key_id),
        aws_secret_access_key=_secret(settings.s3_secret_access_key),
        region_name=settings.s3_region,
    )
    config = Config(
        connect_timeout=settings.s3_connect_timeout_s,
        read_timeout=settings.s3_read_timeout_s,
        retries={"mode": "standard", "total_max_attempts": settings.s3_max_attempts},
        s3={"addressing_style": settings.s3_addressing_style},
        signature_version="s3v4",
        max_pool_connections=4 * _UPLOAD_THREADS,
    )
    return session.client("s3", endpoint_url=settings.s3_endpoint_url, config=config)


class S3Storage:
    def __init__(self, client: Any, bucket: str, *, prefix: str = "", part_size_mib: int = 8, where: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.where = where or "S3"
        part = part_size_mib * _MIB
        self._transfer = TransferConfig(
            multipart_threshold=part,
            multipart_chunksize=part,
            max_concurrency=_UPLOAD_THREADS,
            preferred_transfer_client="classic",
        )
        # Parts read ahead and waiting for a thread: s3transfer allows 10 by default (80 MiB at 8 MiB parts).
        self._transfer.max_in_memory_upload_chunks = _UPLOAD_THREADS

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        assert settings.s3_bucket is not None  # Settings refuses s3 without a bucket
        where = settings.s3_endpoint_url or f"AWS S3 ({settings.s3_region})"
        return cls(
            make_client(settings),
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            part_size_mib=settings.s3_part_size_mib,
            where=where,
        )

    def object_name(self, key: str) -> str:
        """The object's name in the bucket; refuses (before any call) a key not of ``KEY``'s shape."""
        return self.prefix + checked_key(key)

    def unavailable(self, doing: str, exc: Exception) -> StorageUnavailableError:
        return StorageUnavailableError(f"{self.where}, bucket {self.bucket!r}: could not {doing}: {exc}")

    def save(self, source: BinaryIO, kind: str = "originals") -> str:
        key = new_key(kind)
        try:
            # A failed multipart upload is aborted by the transfer manager: no half object stays.
            self.client.upload_fileobj(source, self.bucket, self.object_name(key), Config=self._transfer)
        except _FAILURES as exc:
            raise self.unavailable(f"store {key}", exc) from exc
        return key

    def open(self, key: str) -> BinaryIO:
        return io.BufferedReader(S3ObjectReader(self, self.object_name(key)), _READ_BUFFER)

    def delete(self, key: str) -> None:
        name = self.object_name(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=name)
        except _FAILURES as exc:
            raise self.unavailable(f"delete {key}", exc) from exc

    def exists(self, key: str) -> bool:
        name = self.object_name(key)
        try:
            self.client.head_object(Bucket=self.bucket, Key=name)
        except ClientError as exc:
            if _status(exc)[1] in _NOT_FOUND:
                return False
            raise self.unavailable(f"look up {key}", exc) from exc
        except _FAILURES as exc:
            raise self.unavailable(f"look up {key}", exc) from exc
        return True

    def check(self) -> None:
        """At start-up: the endpoint answers, the credentials are taken and the bucket exists."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError as exc:
            raise StorageUnavailableError(
                "no S3 credentials: set APP_S3_ACCESS_KEY_ID and APP_S3_SECRET_ACCESS_KEY "
                "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            ) from exc
        except EndpointConnectionError as exc:
            raise StorageUnavailableError(f"APP_S3_ENDPOINT_URL: nothing answers at {self.where} ({exc})") from exc
        except ClientError as exc:
            status, code = _status(exc)
            if status == 404 or code in ("NoSuchBucket", "404", "NotFound"):
                message = f"APP_S3_BUCKET: there is no bucket {self.bucket!r} at {self.where}; create it first"
            elif status in (401, 403) or code in _REFUSED:
                message = (
                    f"APP_S3_ACCESS_KEY_ID / APP_S3_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY): "
                    f"{self.where} refuses them for bucket {self.bucket!r} ({status} {code})"
                )
            elif status == 301 or code in ("PermanentRedirect", "AuthorizationHeaderMalformed"):
                message = f"APP_S3_REGION: bucket {self.bucket!r} is in another region ({status} {code})"
            else:
                message = f"{self.where} answered {status} {code} for bucket {self.bucket!r}"
            raise StorageUnavailableError(message) from exc
        except _FAILURES as exc:
            raise StorageUnavailableError(f"APP_S3_ENDPOINT_URL: {self.where} cannot be used ({exc})") from exc


class S3ObjectReader(io.RawIOBase):
    """One stored object as a seekable raw file; the body of one GET at a time, closed when done with."""

    def __init__(self, storage: S3Storage, name: str) -> None:
        super().__init__()
        self.name = name.rsplit("/", 1)[-1]
        self._storage = storage
        self._object = name
        self._position = 0
        response = self._get(None)
        self._size = int(response["ContentLength"])
        # Later range GETs ask for this very version: keys are never reused, but a store may be written behind us.
        self._etag: str | None = response.get("ETag")
        self._body: Any = response["Body"]
        self._body_position = 0

    def _get(self, first_byte: int | None) -> dict[str, Any]:
        arguments: dict[str, Any] = {"Bucket": self._storage.bucket, "Key": self._object}
        if first_byte is not None:
            arguments["Range"] = f"bytes={first_byte}-"
            if self._etag:
                arguments["IfMatch"] = self._etag
        try:
            response: dict[str, Any] = self._storage.client.get_object(**arguments)
        except ClientError as exc:
            if first_byte is None and _status(exc)[1] in _NOT_FOUND:
                raise FileNotFoundError(f"no stored object {self._object!r}") from exc
            raise self._storage.unavailable(f"read {self._object}", exc) from exc
        except _FAILURES as exc:
            raise self._storage.unavailable(f"read {self._object}", exc) from exc
        return response

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence ({whence})")
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def readall(self) -> bytes:
        # RawIOBase's own readall asks for 8 KiB at a time; the rest of the body in big reads instead.
        chunks: list[bytes] = []
        while chunk := self.read(_READ_BUFFER):
            chunks.append(chunk)
        return b"".join(chunks)

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if self._position >= self._size:
            return 0
        if self._body is None or not 0 <= self._position - self._body_position <= _SKIP_WITHIN:
            self._drop()
            self._body = self._get(self._position)["Body"]
            self._body_position = self._position
        while self._body_position < self._position:  # a short jump forward: read on, do not reconnect
            self._body_position += len(self._read_body(self._position - self._body_position))
        data = self._read_body(min(len(buffer), self._size - self._position))
        count = len(data)
        buffer[:count] = data
        self._position += count
        self._body_position += count
        return count

    def _read_body(self, most: int) -> bytes:
        try:
            data: bytes = self._body.read(most)
        except _FAILURES as exc:
            self._drop()
            raise self._storage.unavailable(f"read {self._object}", exc) from exc
        if not data:
            self._drop()
            raise self._storage.unavailable(f"read {self._object}", EOFError("the object ended early"))
        return data

    def _drop(self) -> None:
        """Close the current body; unread, its connection is closed rather than given back to the pool."""
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop()
        super().close()
