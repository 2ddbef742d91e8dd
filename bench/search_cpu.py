"""CPU per search, in process: the search itself, and the whole request through the ASGI app.

    .venv/bin/python bench/search_cpu.py --url DATABASE_URL [--searches 140] [--repeats 3]
        [--seed 15] [--asgi] [--profile] [--worst N] [--statements] [--q QUERY ...]

``--url``: an archive loaded by ``bench/bench_search.py`` (its cache under ``.cache/bench-search/``:
``sqlite:///.cache/bench-search/sqlite-<lines>-<key>.db`` or
``postgresql+psycopg://postgres@127.0.0.1:5432/bench_search_<lines>_<key>``), migrated to the newest
revision (the backend migrates it when it starts; ``python -m backend migrate`` does too).

The seeded query mix of the benchmark (bench/search_letters.py), ``--searches`` of them, each
run ``--repeats`` times over (the whole mix, then again); per search the lowest CPU of its
repeats, then the mean per kind and per filter. Counted: this process's CPU (``time.process_time``: Python,
SQLAlchemy, the driver and, for SQLite, the database engine itself) and, on PostgreSQL, the
CPU of the database's server process that served the connection (``/proc/<pid>/schedstat``,
nanoseconds), so the two databases are compared on what a search costs the machine.

- default: ``backend.search.service.search`` and the answer's JSON, a fresh session each;
- ``--asgi``: ``GET /api/search`` into the app's ASGI callable (authentication, middleware,
  the thread-pool trip, FastAPI's validation and JSON; no sockets, no HTTP parser);
- ``--profile``: cProfile over one pass of the mix, the functions with the most own time.
- ``--q QUERY`` (repeatable): these searches instead of the mix, each a kind of its own;
- ``--statements`` (PostgreSQL): one pass of the mix more, the server's CPU around each SQL
  statement, summed by statement (its first words) and divided by the searches: which of a
  search's statements the database's time goes to.

Sequential searches leave out what concurrency adds: this compares versions of the code. A
busy machine inflates CPU time only a little (caches, frequency), unlike latency.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, event, select, text  # noqa: E402

from bench.backend_process import CHEAP_ARGON2  # noqa: E402
from bench.profile_api import AsgiCaller  # noqa: E402
from bench.search_letters import WRITERS, Query, queries, writers  # noqa: E402

OVERALL = "all"


FILTERS = ("writer", "dateFrom", "status", "nothing")


def _filtered(query: Query) -> str:
    """What the search is filtered by (the mix gives each at most one filter)."""
    return "by " + next(name for name in FILTERS if name in query.params or name == "nothing")


def _server_ns(pid: int | None) -> int:
    """CPU nanoseconds the database's server process has run (0 where there is none: SQLite)."""
    if pid is None:
        return 0
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def _statement_costs(engine: Engine, pid: int, run: Callable[[], object], searches: int) -> None:
    """Run ``run`` with the server's CPU read around each statement; print the sums per statement."""
    costs: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    started: list[tuple[str, int]] = []

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        started.append((" ".join(statement.split())[:100], _server_ns(pid)))

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        name, at = started.pop()
        costs[name][0] += 1
        costs[name][1] += (_server_ns(pid) - at) / 1e6

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        total_before = _server_ns(pid)
        run()
        total = (_server_ns(pid) - total_before) / 1e6
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    print(f"database server CPU a search: {total / searches:.2f} ms, by statement:")
    for name, (count, ms) in sorted(costs.items(), key=lambda item: -item[1][1]):
        print(f"  {ms / searches:6.2f} ms  {int(count):5d}x  {name}")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from backend.app import create_app
    from backend.search.schemas import SearchParams
    from backend.search.service import SearchLimits, search
    from backend.settings import Settings
    from backend.users.models import CredentialKind, User

    for name, value in CHEAP_ARGON2.items():
        os.environ[name] = value
    storage = Path(tempfile.mkdtemp(prefix="search-cpu-"))
    settings = Settings(database_url=args.url, storage_dir=storage, ocr_jobs_concurrency=0)
    app = create_app(settings)
    services = app.state.services
    limits = SearchLimits.from_settings(settings)
    mix = queries(random.Random(args.seed), writers(WRITERS), args.searches)
    if args.q:
        # Given searches instead of the mix, each its own kind.
        mix = [Query(q, {"q": q}) for q in args.q]
    postgres = services.db.engine.dialect.name == "postgresql"
    # One pooled connection, so one server process serves every search (and is the one measured).
    with services.db.engine.connect() as connection:
        pid = int(connection.scalar(text("SELECT pg_backend_pid()"))) if postgres else None

    def service(query: Query) -> None:
        with services.db.sessions() as session:
            params = SearchParams.model_validate({"pageSize": "20", **query.params})
            search(session, params, limits).model_dump_json(by_alias=True)

    call: Callable[[Query], None] = service
    if args.asgi:
        with services.db.sessions() as session:
            user = session.scalars(select(User).order_by(User.id)).first()
            assert user is not None
            issued = services.credentials.issue(
                session, user, CredentialKind.BEARER, services.clock(), services.token_ttl
            )
            session.commit()
        loop = asyncio.new_event_loop()
        caller = AsgiCaller(app, issued.token)

        def through_app(query: Query) -> None:
            status, body = loop.run_until_complete(
                caller("GET", "/api/search", urlencode({"pageSize": "20", **query.params}))
            )
            if status != 200:
                raise RuntimeError(f"{query.params}: {status} {body[:300]!r}")

        call = through_app

    for query in mix[:10]:  # warm: the statement caches, the pages the searches read
        call(query)
    if args.profile:
        # CPU time, not the wall's: the waits for the database server drop out (its CPU is --statements').
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        for query in mix:
            call(query)
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(r"backend|sqlalchemy/(engine|orm/session)", 25)
        print(out.getvalue())
    if args.statements and pid is not None:

        def one_pass() -> None:
            for query in mix:
                call(query)

        _statement_costs(services.db.engine, pid, one_pass, len(mix))
    best: list[tuple[float, float]] = [(float("inf"), float("inf"))] * len(mix)
    for _ in range(args.repeats):
        for number, query in enumerate(mix):
            server_before, before = _server_ns(pid), time.process_time()
            call(query)
            own_ms = 1000 * (time.process_time() - before)
            server_ms = (_server_ns(pid) - server_before) / 1e6
            if own_ms + server_ms < sum(best[number]):
                best[number] = (own_ms, server_ms)
    services.db.dispose()
    if args.worst:
        ranked = sorted(zip(mix, best, strict=True), key=lambda item: -sum(item[1]))
        for query, (own_ms, server_ms) in ranked[: args.worst]:
            print(f"{own_ms:7.2f} + {server_ms:7.2f} ms  {query.kind:<10} {query.params}")
    by_kind: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for query, figures in zip(mix, best, strict=True):
        by_kind[query.kind].append(figures)
        by_kind[_filtered(query)].append(figures)
        by_kind[OVERALL].append(figures)
    result: dict[str, Any] = {}
    filters = [f"by {name}" for name in FILTERS]
    kinds = sorted(k for k in by_kind if k != OVERALL and k not in filters)
    for kind in [*kinds, *(f for f in filters if f in by_kind), OVERALL]:
        own = statistics.fmean(f[0] for f in by_kind[kind])
        server = statistics.fmean(f[1] for f in by_kind[kind])
        result[kind] = {
            "searches": len(by_kind[kind]),
            "processMs": round(own, 2),
            "databaseServerMs": round(server, 2),
            "totalMs": round(own + server, 2),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="a loaded, migrated archive (see above)")
    parser.add_argument("--searches", type=int, default=140, help="searches in the seeded mix")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the mix; the lowest CPU of each search")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--asgi", action="store_true", help="through the app's ASGI callable, not the service alone")
    parser.add_argument("--q", action="append", help="search this instead of the mix (repeatable)")
    parser.add_argument("--worst", type=int, default=0, help="print the N searches that cost the most")
    parser.add_argument("--profile", action="store_true", help="cProfile one pass first")
    parser.add_argument(
        "--statements", action="store_true", help="PostgreSQL: the server's CPU per statement over one pass"
    )
    args = parser.parse_args()
    result = measure(args)
    print(f"{'kind':<12} {'searches':>8} {'process ms':>11} {'db server ms':>13} {'total ms':>9}")
    for kind, figures in result.items():
        print(
            f"{kind:<12} {figures['searches']:>8} {figures['processMs']:>11.2f} "
            f"{figures['databaseServerMs']:>13.2f} {figures['totalMs']:>9.2f}"
        )
    print(json.dumps({"url": args.url.rsplit("@", 1)[-1], "asgi": args.asgi, "perKind": result}))


if __name__ == "__main__":
    main()
