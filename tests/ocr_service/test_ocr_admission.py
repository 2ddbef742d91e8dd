"""The read path over real HTTP, with a pool whose pages finish when the test says so:
admission before the body, bounded bodies, and clients that leave at any point.

No kraken here (``HeldPool`` stands in for the workers), so every test is deterministic
and quick; the real-kraken read path is tested in test_ocr_api.py.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from ocr_service.api.deps import Services
from ocr_service.api.ocr_input import MAX_JSON_BYTES
from ocr_service.app import create_app
from ocr_service.model_ref import ModelFacts
from tests.conftest import make_settings
from tests.support.held_pool import HeldPool
from tests.support.servers import FileServer, RunningApp, send_bytes, start_app, start_file_server
from tests.support.synthetic import to_pdf, to_png

MAX_DOCUMENT_BYTES = 64 * 1024
PATHS = ["/ocr", "/ocr/stream"]


@dataclass
class HeldService:
    running: RunningApp
    pool: HeldPool
    services: Services

    @property
    def active(self) -> int:
        return self.services.ocr.admission.active

    def idle(self) -> bool:
        return self.active == 0 and self.services.ocr.memory.held == 0 and self.pool.in_pool == 0


@pytest.fixture
def held(tmp_path: Path) -> Iterator[HeldService]:
    """A service of one worker and a queue of one (two documents at most), no kraken."""
    yield from _held_service(tmp_path)


def _held_service(tmp_path: Path, **overrides: Any) -> Iterator[HeldService]:
    values: dict[str, Any] = {
        "workers": 1,
        "queue_size": 1,
        "retry_after_s": 7,
        "max_document_bytes": MAX_DOCUMENT_BYTES,
        "allowed_pdf_hosts": ["127.0.0.1"],
        "allow_private_addresses": True,
        "fetch_timeout_s": 120,
    }
    settings = make_settings(tmp_path, **{**values, **overrides})
    app = create_app(settings)
    services: Services = app.state.services
    pool = HeldPool(workers=1)
    services.pool = pool  # type: ignore[assignment]
    services.ocr.pool = pool  # type: ignore[assignment]
    running = start_app(app)
    yield HeldService(running, pool, services)
    pool.release.set()
    running.stop()


def wait_until(condition: Callable[[], bool], within_s: float = 60) -> float:
    """Seconds until ``condition`` holds; fails the test if it never does (a guard, not a timing)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within_s:
            raise AssertionError("the condition never came true")
        time.sleep(0.002)
    return time.monotonic() - started


def page_png(seed: int = 1) -> bytes:
    return to_png(Image.new("RGB", (60 + seed % 40, 50), (seed % 256, 255, 255)))


def raw_request(running: RunningApp, path: str, **build: object) -> tuple[bytes, bytes]:
    """The request's head and body as bytes, built by httpx, to send over a bare socket."""
    request = httpx.Request("POST", f"{running.url}{path}", **build)  # type: ignore[arg-type]
    body = request.read()
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in request.headers.items()) + "\r\n"
    return head.encode("latin-1"), body


def connect(running: RunningApp) -> socket.socket:
    host, port = running.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.settimeout(60)  # a guard: a server that waits for a body we never send fails the test
    return sock


def read_head_and_body(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection without an answer"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(status_line.split()[1]), headers, body


def hang_up(sock: socket.socket) -> None:
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def leaked_temp_files() -> int:
    """Open files of this process (the test server runs here) that are already deleted: spooled
    uploads and downloads are such unnamed files until they are closed."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").endswith("(deleted)"):
                count += 1
        except OSError:
            continue
    return count


def served_at_once(held: HeldService) -> None:
    """The next document is admitted and read (the pool lets its page go at once)."""
    held.pool.release.set()
    with held.running.client() as client:
        response = client.post("/ocr", files={"file": ("a.png", page_png())})
    assert response.status_code == 200, response.text
    assert [p["page"] for p in response.json()["pages"]] == [1]


# --- admission before the body ----------------------------------------------------------------


def _fill(held: HeldService) -> list[threading.Thread]:
    """Hold as many documents as the service admits, each with a page in the pool."""
    readers = []
    for seed in range(held.services.ocr.admission.limit):

        def read(seed: int = seed) -> None:
            with held.running.client() as client:
                assert client.post("/ocr", files={"file": ("a.png", page_png(seed))}).status_code == 200

        readers.append(threading.Thread(target=read))
        readers[-1].start()
    wait_until(lambda: held.pool.in_pool == held.services.ocr.admission.limit)
    return readers


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", ["multipart", "json"])
def test_a_full_service_answers_503_after_the_headers_before_any_of_the_body(
    held: HeldService, path: str, kind: str
) -> None:
    readers = _fill(held)
    if kind == "multipart":
        head, _ = raw_request(held.running, path, files={"file": ("a.pdf", b"%PDF-" + b"0" * (60 * 1024))})
    else:
        head, _ = raw_request(held.running, path, json={"documentUrl": "http://127.0.0.1:9/a.pdf"})
    sock = connect(held.running)
    try:
        sock.sendall(head)  # the body is never sent: the answer must not wait for it
        status, headers, answer = read_head_and_body(sock)
    finally:
        sock.close()
    assert status == 503
    assert json.loads(answer)["code"] == "SERVICE_BUSY"
    assert headers["retry-after"] == "7"
    held.pool.release.set()
    for reader in readers:
        reader.join()
    assert held.idle()
    served_at_once(held)


# --- bodies are bounded -----------------------------------------------------------------------


def _upload_of_size(size: int, rng: random.Random) -> bytes:
    """A valid page image padded to exactly ``size`` bytes (Pillow ignores data after the image)."""
    image = page_png(rng.randrange(1000))
    return image + rng.randbytes(size - len(image))


def _sizes(rng: random.Random) -> list[int]:
    edge = [MAX_DOCUMENT_BYTES - 1, MAX_DOCUMENT_BYTES, MAX_DOCUMENT_BYTES + 1, 2 * MAX_DOCUMENT_BYTES]
    return edge + [rng.randint(MAX_DOCUMENT_BYTES // 2, 3 * MAX_DOCUMENT_BYTES) for _ in range(4)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_document_over_the_limit_is_always_413_document_too_large_and_leaves_nothing(
    held: HeldService, path: str, chunked: bool
) -> None:
    held.pool.release.set()
    rng = random.Random(f"{path}{chunked}")
    before = leaked_temp_files()
    with held.running.client() as client:
        for size in _sizes(rng):
            request = client.build_request("POST", path, files={"file": ("doc", _upload_of_size(size, rng))})
            if chunked:
                body = request.read()
                request = client.build_request(
                    "POST",
                    path,
                    headers={"content-type": request.headers["content-type"]},
                    content=iter([body[i : i + 7000] for i in range(0, len(body), 7000)]),
                )
                assert "content-length" not in request.headers
            response = client.send(request)
            if size <= MAX_DOCUMENT_BYTES:
                assert response.status_code == 200, (size, response.text)
            else:
                assert response.status_code == 413, (size, response.text)
                assert response.json()["code"] == "DOCUMENT_TOO_LARGE"
                assert response.json()["details"] == {"maxBytes": MAX_DOCUMENT_BYTES}
            # A stream gives its place back once its last byte is sent, a moment after the client has it.
            wait_until(held.idle)
    assert leaked_temp_files() == before


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_json_body_is_capped_at_a_few_kilobytes(held: HeldService, path: str, chunked: bool) -> None:
    rng = random.Random(path)
    with held.running.client() as client:
        for size in [MAX_JSON_BYTES + 1, MAX_JSON_BYTES + 2, 10 * MAX_JSON_BYTES, rng.randint(MAX_JSON_BYTES, 10**6)]:
            payload = b'{"documentUrl": "http://127.0.0.1/' + b"a" * size + b'"}'
            content: bytes | Iterator[bytes] = iter([payload]) if chunked else payload
            response = client.post(path, content=content, headers={"content-type": "application/json"})
            assert response.status_code == 413, response.text
            assert response.json()["code"] == "REQUEST_TOO_LARGE"
    assert held.active == 0


# --- clients that leave -----------------------------------------------------------------------


def _leave_and_check(held: HeldService, sock: socket.socket, cancelled_pages: int) -> float:
    """The client's place is free at once; the memory of a page it left in the pool only once
    the pool lets that page go (a worker reads it to the end)."""
    hang_up(sock)
    seconds = wait_until(lambda: held.active == 0 and held.pool.cancelled == cancelled_pages)
    assert (held.pool.in_pool, held.services.ocr.memory.held > 0) == (cancelled_pages, cancelled_pages > 0)
    held.pool.release.set()
    wait_until(held.idle)
    assert held.pool.abandoned_done == cancelled_pages
    return seconds


@pytest.mark.parametrize("path", PATHS)
def test_a_client_that_leaves_while_its_page_is_in_the_pool_frees_everything(held: HeldService, path: str) -> None:
    """For the stream: before the first byte of the body was read."""
    before = leaked_temp_files()
    head, body = raw_request(held.running, path, files={"file": ("a.pdf", to_pdf([Image.new("L", (40, 40))] * 3))})
    sock = connect(held.running)
    sock.sendall(head + body)
    wait_until(lambda: held.pool.in_pool == 1)
    _leave_and_check(held, sock, cancelled_pages=1)
    assert held.pool.finished == 0
    assert leaked_temp_files() == before
    served_at_once(held)


def test_a_client_that_leaves_mid_stream_frees_everything(held: HeldService) -> None:
    head, body = raw_request(
        held.running, "/ocr/stream", files={"file": ("a.pdf", to_pdf([Image.new("L", (40, 40))] * 4))}
    )
    sock = connect(held.running)
    sock.sendall(head + body)
    held.pool.let_finish(1)
    received = b""
    while b'"page": 2' not in received:  # page 1 is done and page 2 has started
        chunk = sock.recv(65536)
        assert chunk
        received += chunk
    assert b" 200 " in received.split(b"\r\n")[0]
    wait_until(lambda: held.pool.in_pool == 1)
    _leave_and_check(held, sock, cancelled_pages=1)
    assert held.pool.finished == 1
    served_at_once(held)


def _slow_download(started: threading.Event, go_on: threading.Event) -> Callable[[BaseHTTPRequestHandler], None]:
    def handle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/pdf")
        handler.send_header("Content-Length", str(MAX_DOCUMENT_BYTES))
        handler.end_headers()
        handler.wfile.write(b"%PDF-1.4\n")
        handler.wfile.flush()
        started.set()
        go_on.wait(120)

    return handle


@pytest.mark.parametrize("path", PATHS)
def test_a_client_that_leaves_during_a_slow_document_url_frees_everything(held: HeldService, path: str) -> None:
    started, go_on = threading.Event(), threading.Event()
    files: FileServer = start_file_server({"/slow.pdf": _slow_download(started, go_on)})
    before = leaked_temp_files()
    try:
        head, body = raw_request(held.running, path, json={"documentUrl": f"{files.url}/slow.pdf"})
        sock = connect(held.running)
        sock.sendall(head + body)
        assert started.wait(60)
        wait_until(lambda: held.active == 1)
        _leave_and_check(held, sock, cancelled_pages=0)
        assert held.pool.entered == []
        assert leaked_temp_files() == before
    finally:
        go_on.set()
        files.stop()
    served_at_once(held)


@pytest.mark.parametrize("seed", range(6))
def test_clients_that_leave_at_random_moments_never_leave_anything_behind(held: HeldService, seed: int) -> None:
    """Random documents, paths and moments of leaving, several clients at once."""
    rng = random.Random(seed)
    before = leaked_temp_files()
    files = start_file_server({"/doc.pdf": send_bytes(to_pdf([Image.new("L", (30, 30))] * 3))})
    try:
        sockets = []
        for _ in range(held.services.ocr.admission.limit):
            path = rng.choice(PATHS)
            if rng.random() < 0.5:
                head, body = raw_request(held.running, path, json={"documentUrl": f"{files.url}/doc.pdf"})
            else:
                # At most 2:1 wide: a wider page is refused (PAGE_SHAPE_UNSUPPORTED) and never reaches the pool.
                pages = [Image.new("L", (rng.randint(20, 60), 30))] * rng.randint(1, 4)
                head, body = raw_request(held.running, path, files={"file": ("a.pdf", to_pdf(pages))})
            sock = connect(held.running)
            # Some leave halfway through sending their upload, the others once a page is in the pool.
            cut = rng.choice([len(body) // 2, len(body)])
            sock.sendall(head + body[:cut])
            sockets.append((sock, cut < len(body)))
        wait_until(lambda: held.pool.in_pool == sum(1 for _, partial in sockets if not partial))
        held.pool.let_finish(rng.randint(0, 2))
        for sock, _ in sockets:
            hang_up(sock)
        wait_until(lambda: held.active == 0)
        # Pages left in the pool keep their memory until the pool lets them go.
        assert held.services.ocr.memory.held > 0 or held.pool.in_pool == 0
        held.pool.release.set()
        wait_until(held.idle)
        assert leaked_temp_files() == before
    finally:
        files.stop()
    served_at_once(held)


def _mutated_form(rng: random.Random) -> tuple[bytes, str]:
    request = httpx.Request(
        "POST", "http://x/ocr", files={"file": ("a.png", page_png(rng.randrange(100)))}, data={"model": "m"}
    )
    body = bytearray(request.read())
    content_type = request.headers["content-type"]
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(6)
        at = rng.randrange(len(body))
        if choice == 0:
            body[at] ^= 1 << rng.randrange(8)
        elif choice == 1:
            del body[at:]
        elif choice == 2:
            body[at:at] = rng.choice([b"\r\n", b"--", b"\r\n\r\n", b'Content-Disposition: form-data; name="file"'])
        elif choice == 3:
            content_type = rng.choice(["multipart/form-data", "multipart/form-data; boundary=", content_type + "x"])
        elif choice == 4:
            body = body.replace(b'name="file"', rng.choice([b'name="file"; filename=""', b"", b'name="model"']))
        else:
            body[at : at + rng.randint(1, 40)] = rng.randbytes(rng.randint(0, 40))
    return bytes(body), content_type


@pytest.mark.parametrize("path", PATHS)
def test_mangled_multipart_bodies_get_a_4xx_with_a_code_never_a_5xx(held: HeldService, path: str) -> None:
    held.pool.release.set()
    rng = random.Random(path)
    outcomes: set[int] = set()
    with held.running.client() as client:
        for _ in range(60):
            body, content_type = _mutated_form(rng)
            response = client.post(path, content=body, headers={"content-type": content_type})
            outcomes.add(response.status_code)
            assert response.status_code < 500, response.text
            if response.status_code != 200:
                assert response.json()["code"] and response.json()["message"]
            wait_until(held.idle)
    assert outcomes - {200}  # the mutations do reach the error paths
    served_at_once(held)


# --- a body that never arrives -----------------------------------------------------------------


@pytest.fixture
def impatient(tmp_path: Path) -> Iterator[HeldService]:
    """The held service, but a request body must arrive within one second."""
    yield from _held_service(tmp_path, body_timeout_s=1)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", ["upload", "json"])
def test_a_body_that_trickles_past_the_time_limit_is_408_and_frees_its_place(
    impatient: HeldService, path: str, kind: str
) -> None:
    if kind == "upload":
        head, body = raw_request(impatient.running, path, files={"file": ("a.png", page_png())})
    else:
        head, body = raw_request(impatient.running, path, json={"documentUrl": "http://127.0.0.1:9/doc.pdf"})
    slow = [connect(impatient.running) for _ in range(impatient.services.ocr.admission.limit)]
    try:
        for sock in slow:
            sock.sendall(head + body[: len(body) // 2])  # and then nothing more: the rest never comes
        answers = [read_head_and_body(sock) for sock in slow]
    finally:
        for sock in slow:
            hang_up(sock)
    for status, _, answer in answers:
        assert status == 408
        assert json.loads(answer)["code"] == "BODY_TIMEOUT"
    wait_until(impatient.idle)
    served_at_once(impatient)


# --- model pins off the event loop ---------------------------------------------------------------


class _SlowPin:
    """The store's pin waits at a gate, as on a slow disk (or a copy across file systems)."""

    def __init__(self, held: HeldService, tmp_path: Path) -> None:
        self.entered, self.gate = threading.Event(), threading.Event()
        # A segmentation model in the store (the packaged one is read in place, never pinned).
        store = held.services.ocr.store
        model = tmp_path / "upload" / "house.mlmodel"
        model.parent.mkdir()
        model.write_bytes(b"a house segmentation model")
        facts = ModelFacts(kind="segmentation", line_type=None, alphabet=None, input_height=1800)
        store.install(model, "house", facts, source="uploaded", replace=False)
        store.set_segmentation("house")
        self.pins = store.pins
        hold = self.pins.hold

        def slow_hold(ref: Any) -> Any:
            self.entered.set()
            assert self.gate.wait(120), "the test never opened the gate"
            return hold(ref)

        self.pins.hold = slow_hold  # type: ignore[method-assign]


@pytest.mark.parametrize("path", PATHS)
def test_the_service_answers_health_while_a_document_waits_for_its_model_pin(
    held: HeldService, path: str, tmp_path: Path
) -> None:
    held.pool.release.set()
    slow = _SlowPin(held, tmp_path)
    answers: list[httpx.Response] = []

    def read() -> None:
        with held.running.client() as client:
            answers.append(client.post(path, files={"file": ("a.png", page_png())}))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert slow.entered.wait(60)
        assert list(slow.pins.held().values()) == []  # the segmentation model's pin is on its way
        # On the event loop, a pin that waits would hold every request up until the gate opens
        # (this one would time out); off it, the service answers at once.
        with held.running.client(timeout=30) as client:
            health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["queue"]["active"] == 1
    finally:
        slow.gate.set()
        reader.join()
    assert answers[0].status_code == 200, answers[0].text
    wait_until(held.idle)
    assert slow.pins.held() == {}


@pytest.mark.parametrize("path", PATHS)
def test_a_client_that_leaves_while_its_model_is_pinned_leaves_no_pin_and_frees_its_place(
    held: HeldService, path: str, tmp_path: Path
) -> None:
    slow = _SlowPin(held, tmp_path)
    head, body = raw_request(held.running, path, files={"file": ("a.png", page_png())})
    sock = connect(held.running)
    sock.sendall(head + body)
    try:
        assert slow.entered.wait(60)
        hang_up(sock)
        held_meanwhile = slow.pins.held()
        wait_until(lambda: held.active == 0)
    finally:
        slow.gate.set()
    wait_until(lambda: slow.pins.held() == {} and held.idle())
    assert held_meanwhile == {} and held.pool.entered == []
    served_at_once(held)
