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

Training (``POST /train``, ``/segtrain``, ``GET /train/jobs[/{id}]``, ``DELETE /train/jobs/{id}``)
answers as before (a fixed job id, paths echoed) until a test turns on ``service.training``
(:class:`TrainingJobs`): then each accepted ZIP becomes a job of its own whose successive
states the test scripts, which can be cancelled, listed and lost (404) like the real
service's; the ZIP and the request's headers are kept. Scripted behaviours still come first.

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
    # The uploaded file itself, kept for the training routes only.
    file: bytes | None = None


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


_TRAINING_ROUTES = ("POST /train", "POST /segtrain")
_FINISHED = frozenset({"DONE", "FAILED", "CANCELLED"})


@dataclass
class TrainingJob:
    job_id: str
    kind: str
    seen: Seen
    # The answers to come: each GET answers the first and moves on while more than one is left.
    states: deque[dict[str, Any]]

    @property
    def archive(self) -> bytes:
        return self.seen.file or b""

    @property
    def status(self) -> str:
        return str(self.states[0].get("status", "QUEUED"))

    def public(self) -> dict[str, Any]:
        base: dict[str, Any] = {
            "jobId": self.job_id,
            "kind": self.kind,
            "status": "QUEUED",
            "epoch": 0,
            "metrics": [],
            "cer": None,
            "accuracy": None,
            "modelName": self.seen.fields.get("modelName"),
            "modelVersion": None,
            "baseModel": self.seen.fields.get("baseModel"),
            "error": None,
            "info": [],
        }
        return {**base, **self.states[0]}


def epoch_state(epoch: int, accuracy: float, status: str = "RUNNING", **more: Any) -> dict[str, Any]:
    """A job's state after ``epoch`` epochs, every epoch ``accuracy`` (CER 1 − accuracy)."""
    metrics = [{"epoch": n, "accuracy": accuracy, "cer": round(1 - accuracy, 6)} for n in range(1, epoch + 1)]
    return {
        "status": status,
        "epoch": epoch,
        "metrics": metrics,
        "accuracy": accuracy,
        "cer": round(1 - accuracy, 6),
        **more,
    }


class TrainingJobs:
    """The stand-in's training jobs, once a test turns them on (``enable`` or ``script``)."""

    DEFAULT = (epoch_state(1, 0.5), epoch_state(2, 0.9, "DONE", modelVersion=1))

    def __init__(self) -> None:
        self.enabled = False
        self.jobs: dict[str, TrainingJob] = {}
        self._accepted = 0
        self._scripts: deque[tuple[dict[str, Any], ...]] = deque()
        self._lock = threading.Lock()

    def enable(self) -> TrainingJobs:
        self.enabled = True
        return self

    def script(self, *states: dict[str, Any]) -> None:
        """The states the next accepted job goes through (its last state stays)."""
        with self._lock:
            self.enabled = True
            self._scripts.append(states)

    def job(self, job_id: str) -> TrainingJob:
        return self.jobs[job_id]

    def only(self) -> TrainingJob:
        (job,) = self.jobs.values()
        return job

    def advance(self, job_id: str, *states: dict[str, Any]) -> None:
        """Move the job on: it answers ``states`` from now on (the last of them stays)."""
        with self._lock:
            self.jobs[job_id].states = deque(states)

    def forget(self, job_id: str) -> None:
        """The service loses the job (its data was reset): 404 from now on."""
        with self._lock:
            del self.jobs[job_id]

    def answer(self, route: str, path: str, seen: Seen) -> Reply:
        with self._lock:
            if route in _TRAINING_ROUTES:
                self._accepted += 1
                job_id = f"train-{self._accepted}"
                states = self._scripts.popleft() if self._scripts else self.DEFAULT
                kind = "segmentation" if route == "POST /segtrain" else "recognition"
                self.jobs[job_id] = TrainingJob(job_id, kind, seen, deque([{"status": "QUEUED"}, *states]))
                return Reply(202, {"jobId": job_id, "status": "QUEUED"})
            if route == "GET /train/jobs":
                return Reply(200, {"jobs": [job.public() for job in reversed(self.jobs.values())]})
            job = self.jobs.get(path.removeprefix("/train/jobs/"))
            if job is None:
                return Reply(404, error_body("JOB_NOT_FOUND", "There is no such training job."))
            if route.startswith("DELETE"):
                if job.status in _FINISHED:
                    return Reply(409, error_body("JOB_FINISHED", f"The job has ended already ({job.status})."))
                job.states = deque([{**job.public(), "status": "CANCELLED", "error": "cancelled"}])
                return Reply(200, job.public())
            answer = job.public()
            if len(job.states) > 1:
                job.states.popleft()
            return Reply(200, answer)

    def handles(self, route: str) -> bool:
        return self.enabled and (
            route in _TRAINING_ROUTES
            or route == "GET /train/jobs"
            or route.startswith(("GET /train/jobs/", "DELETE /train/jobs/"))
        )


class ScriptedService:
    def __init__(self) -> None:
        self.script: dict[str, deque[Behaviour]] = defaultdict(deque)
        self.training = TrainingJobs()
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
            self.training = TrainingJobs()
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
            if queue:
                behaviour: Behaviour = queue.popleft()
            elif self.training.handles(route):
                behaviour = self.training.answer(route, request.url.path, seen)
            else:
                behaviour = self._unscripted(route, seen)
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
    kept: bytes | None = None
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form() as form:
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read()
                    digest, size = hashlib.sha256(data).hexdigest(), len(data)
                    if request.url.path in ("/train", "/segtrain"):
                        kept = data
                else:
                    fields[name] = value
    elif request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
    return Seen(request.method, request.url.path, fields, digest, size, dict(request.headers), json=body, file=kept)


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
