"""S3 for the tests: moto's S3 server in server mode, for real over HTTP on 127.0.0.1.

The issue allows moto's server as the stand-in for MinIO (or AWS S3) on these machines:
the backend talks to it with the same boto3 client, signatures, multipart uploads and
range GETs it uses in production; only the store behind the HTTP API is moto's. One
server per test session on a random free port; every test gets a bucket of its own.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import httpx
from moto.server import ThreadedMotoServer

from backend.storage import KEY

ACCESS_KEY = "test-access-key"  # moto takes any key unless a test turns its auth on (refused_keys)
SECRET_KEY = "test-secret-key"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoS3:
    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def stop(self) -> None:
        self._server.stop()

    def new_bucket(self) -> str:
        name = f"archive-{secrets.token_hex(6)}"
        self.client.create_bucket(Bucket=name)
        return name

    def settings(self, bucket: str | None = None, **overrides: Any) -> dict[str, Any]:
        """Settings overrides for a backend on this server, on a new bucket unless one is named."""
        values: dict[str, Any] = {
            "storage": "s3",
            "s3_endpoint_url": self.endpoint,
            "s3_bucket": bucket or self.new_bucket(),
            "s3_region": REGION,
            "s3_access_key_id": ACCESS_KEY,
            "s3_secret_access_key": SECRET_KEY,
            # The first try and one retry: failures in tests surface fast, retries still happen.
            "s3_max_attempts": 2,
        }
        values.update(overrides)
        return values

    def objects(self, bucket: str) -> dict[str, bytes]:
        """Every object in ``bucket`` by name, read straight from the server (not through the backend)."""
        listed = self.client.list_objects_v2(Bucket=bucket).get("Contents", [])
        return {o["Key"]: self.client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}

    def multipart_uploads(self, bucket: str) -> list[str]:
        return [u["Key"] for u in self.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]

    @contextmanager
    def refused_keys(self) -> Iterator[None]:
        """Turn moto's credential check on (it knows no keys, so every key is refused), then off again."""
        httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()
        try:
            yield
        finally:
            httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"inf").raise_for_status()


def stored_keys(objects: dict[str, bytes], prefix: str = "") -> list[str]:
    """The storage keys among a bucket's objects (checked to be of the backend's own shape)."""
    keys = [name.removeprefix(prefix) for name in objects]
    assert all(name.startswith(prefix) for name in objects)
    assert all(KEY.fullmatch(key) for key in keys), keys
    return sorted(keys)
