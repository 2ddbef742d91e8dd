"""Bodies of the model and training routes over real HTTP: the token and the busy check come
before the body is read, JSON bodies are capped, and mutated training ZIPs are never a 5xx.

"Before the body is read" is checked without timing: the client sends only the headers of a
large body and waits; a server that read the body first would never answer.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ocr_service.app import create_app
from ocr_service.training.service import TrainingRequest, TrainingService
from tests.ocr_service.test_training_api import AUTH, TOKEN, post_zip, training_settings
from tests.ocr_service.test_training_service import DATA, RECOGNITION, stand_in
from tests.support.servers import RunningApp, start_app
from tests.support.training_data import line_set, make_zip
from tests.support.zip_mutations import METHODS, build_zip, mutated, zip_of_names

LARGE = 100 * 1024 * 1024
BOUNDARY = "grenze"
UPLOAD_ROUTES = [("POST", "/models"), ("POST", "/train"), ("POST", "/segtrain")]
JSON_ROUTES = [("PUT", "/models/default"), ("PUT", "/models/segmentation")]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    running = start_app(create_app(training_settings(tmp_path_factory.mktemp("bodies"))), wait_healthy=False)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def training_dir(service: RunningApp) -> Path:
    path: Path = service.app.state.services.settings.training_dir
    return path


def headers_only(url: str, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    """Send the request's headers, never its body, and read the answer."""
    parts = urlsplit(url)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.hostname}", *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection without an answer"
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        fields = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:])
        length = int({k.lower(): v for k, v in fields.items()}["content-length"])
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, "the answer was cut off"
            body += chunk
    return int(head.split()[1]), json.loads(body)


def large_headers(path: str, token: str | None) -> dict[str, str]:
    kind = "application/json" if path.startswith("/models/") else f"multipart/form-data; boundary={BOUNDARY}"
    headers = {"Content-Type": kind, "Content-Length": str(LARGE)}
    if token is not None:
        headers["X-Training-Token"] = token
    return headers


@pytest.mark.parametrize(("method", "path"), UPLOAD_ROUTES + JSON_ROUTES)
@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x"])
def test_a_large_body_without_the_token_is_refused_unread(
    service: RunningApp, training_dir: Path, method: str, path: str, token: str | None
) -> None:
    status, body = headers_only(service.url, method, path, large_headers(path, token))
    assert (status, body["code"]) == (401, "UNAUTHORIZED")
    assert not any(training_dir.iterdir())


def test_a_large_body_to_a_service_without_training_is_refused_unread(tmp_path: Path) -> None:
    running = start_app(create_app(training_settings(tmp_path, training_token=None)), wait_healthy=False)
    try:
        for method, path in UPLOAD_ROUTES + JSON_ROUTES:
            status, body = headers_only(running.url, method, path, large_headers(path, TOKEN))
            assert (status, body["code"]) == (503, "TRAINING_DISABLED"), path
    finally:
        running.stop()


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
def test_a_json_body_over_a_few_kilobytes_is_refused(service: RunningApp, method: str, path: str) -> None:
    headers = {**AUTH, "Content-Type": "application/json", "Content-Length": "5000"}
    status, body = headers_only(service.url, method, path, headers)
    assert (status, body["code"]) == (413, "REQUEST_TOO_LARGE")
    padded = b'{"name": "tiny"' + b" " * 8000 + b"}"
    with service.client() as client:
        # without a declared length (chunked): cut off while it arrives
        chunks = iter([padded[i : i + 1024] for i in range(0, len(padded), 1024)])
        response = client.request(method, path, content=chunks, headers=AUTH)
    assert (response.status_code, response.json()["code"]) == (413, "REQUEST_TOO_LARGE")


@pytest.mark.parametrize(("method", "path"), JSON_ROUTES)
@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{", 400, "MALFORMED_JSON"),
        (b"", 400, "MALFORMED_JSON"),
        (b'{"name": 5}', 422, "INVALID_REQUEST"),
        (b'{"name": "x", "extra": 1}', 422, "INVALID_REQUEST"),
        (b'{"name": "' + b"n" * 65 + b'"}', 422, "INVALID_REQUEST"),
    ],
)
def test_a_bad_json_body_is_a_4xx_with_its_code(
    service: RunningApp, method: str, path: str, content: bytes, status: int, code: str
) -> None:
    with service.client() as client:
        response = client.request(method, path, content=content, headers=AUTH)
    assert (response.status_code, response.json()["code"]) == (status, code)


def test_a_training_upload_while_a_job_runs_is_refused_before_its_body(
    service: RunningApp, training_dir: Path, tmp_path: Path
) -> None:
    services = service.app.state.services
    model = tmp_path / "trained.safetensors"
    model.write_bytes(b"weights")
    busy = TrainingService(
        services.settings,
        services.store,
        trainer_command=stand_in("hang", model),
        poll_interval_s=0.05,
        validate=lambda path: RECOGNITION,
    )
    real, services.training = services.training, busy
    try:
        job = busy.submit(TrainingRequest(kind="recognition", model_name="writer-anna"), io.BytesIO(DATA))
        for path in ("/train", "/segtrain"):
            status, body = headers_only(service.url, "POST", path, large_headers(path, TOKEN))
            assert (status, body["code"]) == (409, "TRAINING_BUSY")
        assert {p.name for p in training_dir.iterdir()} == {job.job_id}
    finally:
        busy.shutdown()
        services.training = real
        for leftover in training_dir.iterdir():
            shutil.rmtree(leftover)


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"modelName": "a", "modelName ": "b"}, "INVALID_REQUEST"),
        ({"modelName": "a", "unknown": "b"}, "INVALID_REQUEST"),
        ({"modelName": "a", "epochs": "x" * 5000}, "INVALID_REQUEST"),
        ({"modelName": "a", "epochs": "zwei"}, "INVALID_REQUEST"),
        ({}, "INVALID_REQUEST"),
        ({"modelName": "  "}, "INVALID_REQUEST"),
    ],
)
def test_a_bad_training_form_is_a_4xx_and_leaves_nothing(
    service: RunningApp, training_dir: Path, form: dict[str, str], code: str
) -> None:
    with service.client() as client:
        response = post_zip(client, "/train", make_zip(line_set(3)), **form)
    assert (response.status_code, response.json()["code"]) == (422, code), response.text
    assert not any(training_dir.iterdir())


def corrupt_stream(method: int) -> bytes:
    """A ZIP of one compressed text whose middle third of compressed bytes is overwritten."""
    data = bytearray(build_zip({"a.gt.txt": b"Grosse Worte " * 400}, method))
    start = 30 + len("a.gt.txt")
    compressed = int.from_bytes(data[18:22], "little")
    data[start + compressed // 3 : start + 2 * compressed // 3] = b"U" * (2 * compressed // 3 - compressed // 3)
    return bytes(data)


@pytest.mark.parametrize(
    "data",
    [
        zip_of_names(["p.xml", "p.xml/q.png"], lambda n: b"x", METHODS["deflate"]),
        zip_of_names(["p.xml/q.png", "p.xml"], lambda n: b"x", METHODS["deflate"]),
        zip_of_names(["a.gt.txt", "n" * 300 + ".png"], lambda n: b"x", METHODS["stored"]),
        corrupt_stream(METHODS["deflate"]),
        corrupt_stream(METHODS["bzip2"]),
        corrupt_stream(METHODS["lzma"]),
    ],
    ids=["file-then-folder", "folder-then-file", "long-name", "corrupt-deflate", "corrupt-bzip2", "corrupt-lzma"],
)
def test_the_issues_bad_zips_are_a_422_and_leave_no_job(service: RunningApp, training_dir: Path, data: bytes) -> None:
    with service.client() as client:
        response = post_zip(client, "/train", data, modelName="bad-zip")
    assert (response.status_code, response.json()["code"]) == (422, "INVALID_ARCHIVE"), response.text
    assert not any(training_dir.iterdir())


def test_mutated_training_zips_over_http_are_never_a_5xx(service: RunningApp, training_dir: Path) -> None:
    # Three line pairs: whatever survives unpacking is refused as too little data, so no trainer starts.
    files = line_set(3, seed=21)
    variants = [
        (what, data)
        for method in sorted(METHODS)
        for what, data in mutated(build_zip(files, METHODS[method]), seed=len(method), count=10)
    ]
    with service.client() as client:
        for what, data in variants:
            response = post_zip(client, "/train", data, modelName="fuzz")
            assert 400 <= response.status_code < 500, f"{what}: {response.status_code} {response.text}"
            assert response.json()["code"], what
            assert not any(training_dir.iterdir()), what
        deadline = time.monotonic() + 180
        while (health := client.get("/health")).status_code != 200:
            assert time.monotonic() < deadline, f"the service did not stay healthy: {health.text}"
            time.sleep(0.5)
        assert client.get("/train/jobs", headers=AUTH).json() == {"jobs": []}
