"""Where the backend's CPU goes per request, for the three operations of ``bench_api.py``.

    .venv/bin/python bench/profile_api.py [--database sqlite|postgresql] [--documents 2000]
        [--lines 100] [--requests 200] [--repeats 5] [--profile] [--quick]

The archive is generated as ``bench_api.py`` generates it. Then, without concurrency (one
client, one request at a time, keep-alive), each operation is sent ``--requests`` times in a
row, ``--repeats`` times over, operations taken turn about:

- ``list``: ``GET /api/documents?limit=50`` following ``nextCursor`` (from the top again at the end),
- ``lines``: ``GET /api/documents/{id}/lines`` of a random document,
- ``correct``: ``PATCH /api/lines/{id}`` with the line's current version.

Default: ``python -m backend`` as its own process, as an operator starts it, and its CPU time
(its threads' schedstat, Linux) per request of each operation: the median and the lowest of the repeats.
Sequential requests leave out what concurrency adds (the thread pool's contention, the
collector), so the figure is for comparing two versions of the code, not a latency.

``--profile``: the same app served by uvicorn in this process (a thread of its own) under
yappi's CPU clock across every thread but the client's; per operation, the CPU time of the
server's threads split by where it was spent (the module of each function's own time), and the
functions with the most own time. Written to bench/results/profile-api-<database>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.backend_process import (  # noqa: E402
    CHEAP_ARGON2,
    add_archivists,
    bench_database,
    free_port,
    login,
    migrated,
    running_backend,
)
from bench.bench_api import generate  # noqa: E402

OPERATIONS = ("list", "lines", "correct")


class Driver:
    """One logged-in client sending one operation at a time and checking every answer."""

    def __init__(self, client: httpx.Client, documents: int, lines: int, seed: int) -> None:
        self.client, self.documents, self.lines = client, documents, lines
        self.rng = random.Random(seed)
        self.cursor: str | None = None
        self.known: dict[int, dict[str, Any]] = {}

    def _ok(self, response: httpx.Response) -> Any:
        if response.status_code != 200:
            request = response.request
            raise RuntimeError(f"{request.method} {request.url}: {response.status_code} {response.text[:300]}")
        return response.json()

    def list(self) -> None:
        params = {"limit": "50"} | ({"cursor": self.cursor} if self.cursor else {})
        self.cursor = self._ok(self.client.get("/api/documents", params=params))["nextCursor"]

    def read_lines(self) -> None:
        document = self.rng.randint(1, self.documents)
        lines = self._ok(self.client.get(f"/api/documents/{document}/lines"))
        if len(lines) != self.lines:
            raise RuntimeError(f"document {document} has {len(lines)} lines, not {self.lines}")
        line = self.rng.choice(lines)
        self.known[line["id"]] = line

    def correct(self) -> None:
        if not self.known:
            self.read_lines()
        line_id = self.rng.choice(list(self.known))
        line = self.known[line_id]
        body = {"text": f"{line['currentText'][:200]} ·", "version": line["version"]}
        saved = self._ok(self.client.patch(f"/api/lines/{line_id}", json=body))
        if saved["version"] != line["version"] + 1:
            raise RuntimeError(f"line {line_id} came back as {saved}")
        self.known[line_id] = saved

    def operation(self, name: str) -> Callable[[], None]:
        return {"list": self.list, "lines": self.read_lines, "correct": self.correct}[name]


def _thread_cpu_ns(pid: int) -> dict[int, int]:
    """CPU nanoseconds of each live thread of ``pid`` (Linux schedstat; psutil's process figure
    counts 10 ms clock ticks, too coarse for a few dozen requests)."""
    spent = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            spent[int(task.name)] = int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended between the listing and the read
    return spent


def _cpu_since(pid: int, before: dict[int, int]) -> float:
    """CPU seconds the threads of ``pid`` spent since ``before`` (threads started since count from
    zero; one that ended meanwhile is missed: the thread pool keeps its busy threads)."""
    return sum(ns - before.get(tid, 0) for tid, ns in _thread_cpu_ns(pid).items()) / 1e9


@contextmanager
def archive(args: argparse.Namespace) -> Iterator[tuple[str, Path]]:
    """A generated archive (URL, a folder for the storage), its users ``client-000``…"""
    with (
        tempfile.TemporaryDirectory(prefix="profile-api-") as folder,
        bench_database(args.database, Path(folder)) as url,
    ):
        database = migrated(url)
        try:
            add_archivists(database, ["client-000"])
            from backend.users.models import User

            with database.sessions() as session:
                owner = session.scalars(select(User.id).order_by(User.id)).first()
            assert owner is not None
            generate(database, args.documents, args.lines, args.pages, owner, args.seed)
        finally:
            database.dispose()
        yield url, Path(folder) / "storage"


def measure_process(args: argparse.Namespace, url: str, storage: Path) -> dict[str, Any]:
    """Server CPU ms per request of each operation, ``python -m backend`` as its own process."""
    samples: dict[str, list[float]] = {op: [] for op in OPERATIONS}
    with running_backend(url, storage, ocr_jobs_concurrency="0") as backend:
        server = backend.process
        with httpx.Client(base_url=backend.url, timeout=60) as client:
            login(client, "client-000")
            driver = Driver(client, args.documents, args.lines, args.seed)
            for op in OPERATIONS:  # warm-up: connections, caches, statement compilation
                for _ in range(20):
                    driver.operation(op)()
            for _ in range(args.repeats):
                for op in OPERATIONS:
                    run = driver.operation(op)
                    before = _thread_cpu_ns(server.pid)
                    for _ in range(args.requests):
                        run()
                    samples[op].append(1000 * _cpu_since(server.pid, before) / args.requests)
    return {
        op: {
            "medianMs": round(statistics.median(values), 3),
            "minMs": round(min(values), 3),
            "repeatsMs": [round(v, 3) for v in values],
        }
        for op, values in samples.items()
    }


# Where a function's own time is counted: the first prefix of its module's file path that matches.
_PLACES = (
    ("sqlalchemy", "sqlalchemy"),
    ("pydantic_core", "pydantic"),
    ("pydantic", "pydantic"),
    ("fastapi", "fastapi"),
    ("starlette", "starlette"),
    ("uvicorn", "uvicorn"),
    ("h11", "uvicorn"),
    ("httptools", "uvicorn"),
    ("anyio", "thread pool (anyio)"),
    ("concurrent", "thread pool (anyio)"),
    ("threading", "thread pool (anyio)"),
    ("queue", "thread pool (anyio)"),
    ("asyncio", "event loop (asyncio)"),
    ("selectors", "event loop (asyncio)"),
    ("psycopg", "database driver"),
    ("sqlite3", "database driver"),
    ("prometheus_client", "metrics"),
    ("logging", "logging"),
    ("json", "json"),
    ("backend", "backend (own code)"),
)


def _place(module: str, name: str) -> str:
    path = module.replace("\\", "/")
    parts = path.split("/")
    for prefix, place in _PLACES:
        if prefix in parts or path.startswith(prefix):
            return place
    # Built-ins (C functions) are named after their type: sqlite3.Cursor.execute, socket.send...
    lowered = name.lower()
    for key, place in (
        ("sqlite3", "database driver"),
        ("cursor", "database driver"),
        ("psycopg", "database driver"),
        ("pydantic", "pydantic"),
        ("socket", "sockets"),
        ("select", "event loop (asyncio)"),
        ("epoll", "event loop (asyncio)"),
        ("lock", "thread pool (anyio)"),
        ("_thread", "thread pool (anyio)"),
    ):
        if key in lowered:
            return place
    return "other"


def profile_in_process(args: argparse.Namespace, url: str, storage: Path) -> dict[str, Any]:
    """yappi's CPU time of the server's threads, per operation, by place and by function."""
    import uvicorn

    try:
        import yappi
    except ImportError:
        raise SystemExit("--profile needs yappi (pip install -e '.[dev]')") from None

    from backend.app import create_app
    from backend.settings import Settings

    port = free_port()
    for name, value in CHEAP_ARGON2.items():
        os.environ[name] = value
    settings = Settings(
        database_url=url, storage_dir=storage, port=port, public_url=f"http://127.0.0.1:{port}", ocr_jobs_concurrency=0
    )
    app = create_app(settings)
    statements = [0]

    def count(*_: Any) -> None:
        statements[0] += 1

    event.listen(app.state.services.db.engine, "before_cursor_execute", count)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), name="server", daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    gc.collect()
    gc.freeze()
    result: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            login(client, "client-000")
            driver = Driver(client, args.documents, args.lines, args.seed)
            for op in OPERATIONS:
                for _ in range(20):
                    driver.operation(op)()
            yappi.set_clock_type("cpu")
            for op in OPERATIONS:
                run = driver.operation(op)
                yappi.clear_stats()
                statements[0] = 0
                yappi.start(builtins=True, profile_threads=True)
                for _ in range(args.requests):
                    run()
                yappi.stop()
                result[op] = {"sqlStatementsPerRequest": statements[0] / args.requests} | _breakdown(
                    yappi, args.requests
                )
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    return result


# Steps of a request, each a function whose time includes what it calls (its total time):
# file name and function name.
_STEPS = {
    "deps.py:get_authenticated": "authentication (deps.get_authenticated)",
    "deps.py:get_session": "session open/close (deps.get_session)",
    "routes.py:list_documents": "route function",
    "routes.py:document_lines": "route function",
    "routes.py:correct_line": "route function",
    "routing.py:serialize_response": "response validation + dump (FastAPI serialize_response)",
    "base.py:BaseHTTPMiddleware.__call__": "latency middleware (BaseHTTPMiddleware, includes the app)",
    "h11_impl.py:H11Protocol.data_received": "uvicorn: reading a request (h11)",
    "h11_impl.py:RequestResponseCycle.send": "uvicorn: writing a response (h11)",
}


def _step(stat: Any) -> str | None:
    return _STEPS.get(f"{stat.module.rsplit('/', 1)[-1]}:{stat.name}")


def _breakdown(yappi: Any, requests: int) -> dict[str, Any]:
    main = threading.main_thread().ident
    server_contexts = {t.id for t in yappi.get_thread_stats() if t.tid != main}
    places: dict[str, float] = defaultdict(float)
    functions: dict[str, float] = defaultdict(float)
    steps: dict[str, float] = defaultdict(float)
    total = 0.0
    for context in server_contexts:
        for stat in yappi.get_func_stats(filter={"ctx_id": context}):
            place = _place(stat.module, stat.full_name)
            places[place] += stat.tsub
            functions[f"{stat.full_name}"] += stat.tsub
            total += stat.tsub
            step = _step(stat)
            if step is not None:
                steps[step] += stat.ttot
    per_request = 1000 / requests
    top = sorted(functions.items(), key=lambda item: -item[1])[:25]
    return {
        "cpuMsPerRequest": round(total * per_request, 3),
        "byStepMs": {k: round(v * per_request, 3) for k, v in steps.items()},
        "byPlaceMs": {k: round(v * per_request, 3) for k, v in sorted(places.items(), key=lambda item: -item[1])},
        "topFunctionsMs": {k: round(v * per_request, 3) for k, v in top},
    }


class AsgiCaller:
    """Requests straight into the ASGI app, in this process: no sockets, no HTTP parser."""

    def __init__(self, app: Any, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, method: str, path: str, query: str = "", body: bytes = b"") -> tuple[int, bytes]:
        headers = [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {self.token}".encode())]
        if body:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        sent = False
        status, chunks = 0, []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)


def _cpu_ms_per_call(call: Callable[[], Any], calls: int, repeats: int) -> float:
    """The lowest of ``repeats`` (this process's CPU ms per call over ``calls`` calls)."""
    best = float("inf")
    for _ in range(repeats):
        before = time.process_time()
        for _ in range(calls):
            call()
        best = min(best, 1000 * (time.process_time() - before) / calls)
    return round(best, 3)


def layers_in_process(args: argparse.Namespace, url: str, storage: Path) -> dict[str, Any]:
    """CPU ms per request of each operation, taken apart: the service work alone (the route's
    queries, its models and JSON), the authentication alone (the bearer token's lookup), and
    the whole request through the ASGI app (FastAPI, the middleware, the thread-pool trips)
    without a server; what ``python -m backend`` spends beyond that is the HTTP server's."""
    from backend.app import create_app
    from backend.documents.schemas import DocumentFilter
    from backend.settings import Settings
    from backend.users.models import CredentialKind, User

    for name, value in CHEAP_ARGON2.items():
        os.environ[name] = value
    settings = Settings(database_url=url, storage_dir=storage, ocr_jobs_concurrency=0)
    app = create_app(settings)
    services = app.state.services
    rng = random.Random(args.seed)
    with services.db.sessions() as session:
        user = session.scalars(select(User)).first()
        issued = services.credentials.issue(session, user, CredentialKind.BEARER, services.clock(), services.token_ttl)
        session.commit()
    token = issued.token
    versions: dict[int, int] = {}

    def list_service() -> None:
        with services.db.sessions() as session:
            services.documents.search(session, DocumentFilter(limit=50)).model_dump_json(by_alias=True)

    def lines_service() -> None:
        with services.db.sessions() as session:
            document = services.documents.get(session, rng.randint(1, args.documents))
            services.lines.for_document_json(session, document)

    def correct_service() -> None:
        line_id = rng.randint(1, args.documents * args.lines)
        with services.db.sessions() as session:
            author = session.get(User, user.id)
            saved = services.lines.correct(
                session, line_id, "berichtigt", versions.get(line_id, 1), author, services.clock()
            )
            versions[line_id] = saved.version
            saved.model_dump_json(by_alias=True)

    def auth_only() -> None:
        with services.db.sessions() as session:
            services.credentials.resolve(session, token, CredentialKind.BEARER, services.clock())

    loop = asyncio.new_event_loop()
    caller = AsgiCaller(app, token)

    def asgi(method: str, path: str, query: str = "", body: bytes = b"") -> None:
        status, answer = loop.run_until_complete(caller(method, path, query, body))
        if status != 200:
            raise RuntimeError(f"{method} {path}: {status} {answer[:300]!r}")

    def correct_asgi() -> None:
        line_id = rng.randint(1, args.documents * args.lines)
        version = versions.get(line_id, 1)
        asgi("PATCH", f"/api/lines/{line_id}", body=json.dumps({"text": "berichtigt", "version": version}).encode())
        versions[line_id] = version + 1

    calls = {
        "list": (list_service, lambda: asgi("GET", "/api/documents", "limit=50")),
        "lines": (lines_service, lambda: asgi("GET", f"/api/documents/{rng.randint(1, args.documents)}/lines")),
        "correct": (correct_service, correct_asgi),
    }
    result: dict[str, Any] = {}
    try:
        for op, (service, whole) in calls.items():
            for call in (service, whole, auth_only):
                call()
            result[op] = {
                "serviceMs": _cpu_ms_per_call(service, args.requests, args.repeats),
                "authenticationMs": _cpu_ms_per_call(auth_only, args.requests, args.repeats),
                "wholeRequestAsgiMs": _cpu_ms_per_call(whole, args.requests, args.repeats),
            }
    finally:
        loop.close()
        services.db.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--lines", type=int, default=100, help="lines per document")
    parser.add_argument("--pages", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200, help="requests per operation and repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--profile", action="store_true", help="in process under yappi: where the CPU goes")
    parser.add_argument("--layers", action="store_true", help="in process: service, authentication, whole ASGI request")
    parser.add_argument("--quick", action="store_true", help="40 documents, 20 requests, 2 repeats")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    if args.quick:
        args.documents, args.requests, args.repeats = 40, 20, 2

    with archive(args) as (url, storage):
        if args.profile:
            figures = profile_in_process(args, url, storage)
            name = f"profile-api-{args.database}.json"
        elif args.layers:
            figures = layers_in_process(args, url, storage)
            name = f"layers-api-{args.database}.json"
        else:
            figures = measure_process(args, url, storage)
            name = f"cpu-api-{args.database}.json"
    result = {
        "database": args.database,
        "archive": {"documents": args.documents, "linesPerDocument": args.lines},
        "requests": args.requests,
        "repeats": args.repeats,
        "loadAverage": [round(x, 2) for x in os.getloadavg()],
        "operations": figures,
    }
    print(json.dumps(result, indent=2))
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
