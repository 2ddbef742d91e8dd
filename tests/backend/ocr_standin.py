"""A scripted stand-in for the OCR service, served for real by uvicorn on 127.0.0.1.

Each route answers from a queue of scripted behaviours (then a plain success): a status
with a body, a hang until released, an NDJSON stream that drips or dies mid-way. Every
request is recorded with its form fields, file digest and headers, so a test can assert
what reached the network — and that nothing did.

Like the real service, ``/ocr`` and ``/ocr/stream`` honour a page range (``firstPage``,
``lastPage``): a scripted document (its page count from its page events, or its pages) is
answered from ``firstPage`` on, with its own page numbers, and a range that is no page
range, or reaches past the document, is 422 ``INVALID_PAGE_RANGE`` — checked by the real
service's own rules (``ocr_service.page_range``). Events without a whole page number (a
scripted ``done``, or a spoiled event) are sent as scripted.

The model routes keep a little state of their own: ``GET /models`` lists ``models`` with the
``default`` and ``segmentationModel`` that ``PUT /models/default`` and ``PUT /models/segmentation``
last chose (each recorded with its JSON body; a scripted answer overrides), and ``/ocr`` can
answer per model (``answer_for_model``), so a test can make one model read better than another.

Run as ``python -m tests.backend.ocr_standin`` it serves the plain successes in a process
of its own (for SIGSTOP / kill tests) and prints its port.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import socket
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.datastructures import UploadFile

from ocr_service.errors import AppError
from ocr_service.page_range import FIRST_PAGE, LAST_PAGE, PageRange


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: dict[str, Any] | None = None
    delay_s: float = 0.0


@dataclass(frozen=True)
class Hang:
    """No answer until the test releases the gate (or the server stops)."""


@dataclass(frozen=True)
class Drip:
    """An NDJSON stream: ``events`` with ``interval_s`` between them; ``die_after`` breaks the
    connection after that many events; ``forever`` repeats the last event without end;
    ``honours_range=False`` sends every event whatever page range was asked (a broken service);
    ``stall_after`` sends nothing more after that many events until the test releases the gate."""

    events: tuple[dict[str, Any], ...]
    interval_s: float = 0.0
    die_after: int | None = None
    forever: bool = False
    honours_range: bool = True
    stall_after: int | None = None


Behaviour = Reply | Hang | Drip


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    fields: dict[str, str]
    file_sha256: str | None
    file_bytes: int
    headers: dict[str, str]
    json: Any = None


def error_body(code: str, message: str = "scripted") -> dict[str, Any]:
    return {"code": code, "message": message}


PAGE_EVENTS: tuple[dict[str, Any], ...] = (
    {"type": "page", "page": 1, "pages": 1, "width": 100, "height": 80},
    {"type": "line", "page": 1, "index": 0, "text": "Liebe Mutter", "confidence": 0.9},
    {"type": "line", "page": 1, "index": 1, "text": "wie geht es", "confidence": 0.8},
    {"type": "done", "pages": 1, "lines": 2, "model": "tiny", "segmentationModel": "blla"},
)

_DEFAULTS: dict[str, Behaviour] = {
    "POST /ocr/stream": Drip(PAGE_EVENTS),
    "POST /ocr": Reply(200, {"pages": [{"page": 1, "width": 100, "height": 80, "lines": []}], "model": "tiny"}),
    "GET /health": Reply(200, {"status": "ok"}),
    "POST /train": Reply(202, {"jobId": "job-1", "status": "QUEUED"}),
    "POST /segtrain": Reply(202, {"jobId": "job-2", "status": "QUEUED"}),
}


class ScriptedService:
    def __init__(self) -> None:
        self.script: dict[str, deque[Behaviour]] = defaultdict(deque)
        self.seen: list[Seen] = []
        self.in_flight = 0
        self.gate = threading.Event()
        self._lock = threading.Lock()
        # The model routes' state: what GET /models lists and the PUTs change.
        self.models: list[dict[str, Any]] = [{"name": "tiny", "kind": "recognition"}]
        self.default_model: str | None = "tiny"
        self.segmentation_model = "blla"
        self.by_model: dict[str, Behaviour] = {}
        self.app = FastAPI()
        self.app.add_api_route(
            "/{path:path}", self._handle, methods=["GET", "POST", "DELETE", "PUT"], response_model=None
        )

    def plan(self, route: str, *behaviours: Behaviour) -> None:
        with self._lock:
            self.script[route].extend(behaviours)

    def answer_for_model(self, model: str, behaviour: Behaviour) -> None:
        """``POST /ocr`` naming ``model`` (the field ``model``) gets ``behaviour`` every time the
        route's script is empty; a request naming no model reads with ``default_model``."""
        with self._lock:
            self.by_model[model] = behaviour

    def reset(self) -> None:
        """Forget the script and the requests; requests still hanging are let go."""
        with self._lock:
            self.script.clear()
            self.seen.clear()
            self.gate.set()
            self.gate = threading.Event()

    def count(self, route: str | None = None) -> int:
        return sum(1 for seen in self.seen if route is None or f"{seen.method} {seen.path}" == route)

    def release(self) -> None:
        self.gate.set()

    async def _handle(self, request: Request) -> Response:
        route = f"{request.method} {request.url.path}"
        seen = await _record(request)
        with self._lock:
            self.seen.append(seen)
            queue = self.script.get(route)
            behaviour = queue.popleft() if queue else self._unscripted(route, seen)
        if route in ("POST /ocr", "POST /ocr/stream"):
            behaviour = _in_range(behaviour, seen.fields)
        gate = self.gate
        self.in_flight += 1
        try:
            if isinstance(behaviour, Hang):
                while not gate.is_set():
                    await asyncio.sleep(0.005)
                return JSONResponse({"released": True})
            if isinstance(behaviour, Drip):
                return StreamingResponse(_drip(behaviour, gate), media_type="application/x-ndjson")
            if behaviour.delay_s:
                await asyncio.sleep(behaviour.delay_s)
            return JSONResponse(behaviour.body or {}, status_code=behaviour.status)
        finally:
            self.in_flight -= 1

    def _unscripted(self, route: str, seen: Seen) -> Behaviour:
        """The answer when the script says nothing (called under the lock)."""
        if route == "POST /ocr":
            model = seen.fields.get("model") or self.default_model
            if model in self.by_model:
                return self.by_model[model]
        if route == "GET /models":
            listing = {"models": self.models, "default": self.default_model}
            return Reply(200, {**listing, "segmentationModel": self.segmentation_model})
        if route in ("PUT /models/default", "PUT /models/segmentation") and isinstance(seen.json, dict):
            name = seen.json.get("name")
            if route == "PUT /models/default":
                self.default_model = name
                return Reply(200, {"name": name})
            self.segmentation_model = name or "blla"
            return Reply(200, {"name": self.segmentation_model, "chosen": name})
        return _DEFAULTS.get(route, Reply(200, {"path": seen.path}))


async def _record(request: Request) -> Seen:
    fields: dict[str, str] = {}
    digest: str | None = None
    size = 0
    body: Any = None
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form() as form:
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read()
                    digest, size = hashlib.sha256(data).hexdigest(), len(data)
                else:
                    fields[name] = value
    elif request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
    return Seen(request.method, request.url.path, fields, digest, size, dict(request.headers), json=body)


def _number(item: dict[str, Any]) -> int | None:
    page = item.get("page")
    return page if type(page) is int else None


def _page_count(behaviour: Behaviour) -> int | None:
    """How many pages the scripted document has: what its answer says, if it says."""
    if isinstance(behaviour, Drip):
        counts = [e["pages"] for e in behaviour.events if e.get("type") == "page" and type(e.get("pages")) is int]
        return max(counts, default=None)
    if isinstance(behaviour, Reply) and behaviour.status == 200 and behaviour.body is not None:
        pages = behaviour.body.get("pages")
        if isinstance(pages, list):
            numbers = [n for n in (_number(p) for p in pages if isinstance(p, dict)) if n is not None]
            return max(numbers, default=None)
    return None


def _in_range(behaviour: Behaviour, fields: dict[str, str]) -> Behaviour:
    """The scripted answer as the real service gives it for the request's page range."""
    if FIRST_PAGE not in fields and LAST_PAGE not in fields:
        return behaviour
    if isinstance(behaviour, Drip) and not behaviour.honours_range:
        return behaviour
    pages = _page_count(behaviour)
    if pages is None:  # an error, a hang, a stream scripted without pages: as scripted
        return behaviour
    try:
        wanted = PageRange.of(fields.get(FIRST_PAGE), fields.get(LAST_PAGE), text=True).indices(pages)
    except AppError as exc:
        return Reply(exc.status, exc.body())

    def kept(item: dict[str, Any]) -> bool:
        number = _number(item)
        # A scripted page past the document (a spoiled stream) stays: only the range's lower end,
        # and an upper end the client asked for, cut pages away.
        last = wanted.stop if LAST_PAGE in fields else None
        return number is None or (number > wanted.start and (last is None or number <= last))

    if isinstance(behaviour, Drip):
        return dataclasses.replace(behaviour, events=tuple(e for e in behaviour.events if kept(e)))
    assert isinstance(behaviour, Reply) and behaviour.body is not None
    pages_kept = [p for p in behaviour.body["pages"] if not isinstance(p, dict) or kept(p)]
    return dataclasses.replace(behaviour, body={**behaviour.body, "pages": pages_kept})


async def _drip(drip: Drip, gate: threading.Event) -> AsyncIterator[bytes]:
    sent = 0
    events = list(drip.events)
    while events:
        if drip.stall_after is not None and sent >= drip.stall_after:
            while not gate.is_set():
                await asyncio.sleep(0.005)
        if drip.die_after is not None and sent >= drip.die_after:
            # An exception inside the body ends the response without its last chunk: the
            # client sees the connection break mid-stream, as when the service dies.
            raise ConnectionAbortedError("scripted death mid-stream")
        event = events.pop(0) if not (drip.forever and len(events) == 1) else events[0]
        yield (json.dumps(event) + "\n").encode()
        sent += 1
        if drip.interval_s:
            await asyncio.sleep(drip.interval_s)


def _listening_socket() -> socket.socket:
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only then;
    # without it every keep-alive answer waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _server(service: ScriptedService) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(service.app, log_config=None, lifespan="off", timeout_graceful_shutdown=1))


@dataclass
class StandIn:
    service: ScriptedService
    server: uvicorn.Server
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        self.service.release()
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_standin() -> StandIn:
    """Serve a fresh scripted service in a thread of this process."""
    service = ScriptedService()
    sock = _listening_socket()
    server = _server(service)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the stand-in OCR service did not start")
        time.sleep(0.01)
    return StandIn(service, server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}")


def main() -> None:
    sock = _listening_socket()
    # Listening before the port is told: connections wait in the backlog until uvicorn serves.
    sock.listen(128)
    print(sock.getsockname()[1], flush=True)
    _server(ScriptedService()).run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
