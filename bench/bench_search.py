"""Benchmark: full-text search over 1 000 000 lines of generated letters, 20 searches at a time.

    .venv/bin/python bench/bench_search.py [--database sqlite|postgresql] [--lines 1000000]
        [--clients 20] [--requests 4000] [--warmup 5] [--serial 300] [--think-ms 0] [--seed 15]
        [--noise 0.03] [--corrected 0.05] [--no-cache] [--quick]

The archive (bench/search_letters.py: German family letters 1890–1960, ~20 lines a page, 1–4
pages, 8 writers, old spellings, ``ss`` for ``ß``, OCR misreadings, corrected lines, words
hyphenated across lines) is bulk-inserted with SQLAlchemy Core into a migrated database, then
the search index is built with ``backend.search.index.rebuild``. The loaded database is kept
under ``.cache/bench-search/`` (SQLite: a file; PostgreSQL: a database
``bench_search_<lines>_<key>`` on 127.0.0.1:5432, ``BENCH_POSTGRES_URL`` points elsewhere), keyed
by the lines, the seed, the noise and corrections and a hash of the generator, the migrations
and the search package: a rerun does not load again (``--no-cache``: a throw-away database,
dropped afterwards).

``python -m backend`` then serves it as its own process on 127.0.0.1, and ``--clients`` httpx
async clients, each logged in as a user of its own, send ``GET /api/search`` one after another
(``--think-ms`` pause, uniform 0–2× that; 0: each sends its next search as soon as the last is
answered, so ``--clients`` searches are always in flight). The seeded query mix: common
words, rare words, names and places, OCR-misread words (``Weihnaehten``), other spellings
(``Gruesse``, ``Strasse``), phrases (``"liebe Mutter"``) and exclusions (``Mutter -Krieg``);
a third with a filter (writer, date range, status), a tenth asking for page 2. ``--warmup``
searches per client first, then ``--requests`` in all, each answer checked (status, page
size, highlights inside the text); then ``--serial`` searches by one client alone (each kind's
latency without a queue, and the server's CPU for it). p50/p95/p99/max per kind and overall,
searches/s, the server's CPU per search, the share of searches that found something (and that
the candidate cap cut), the load and index times and the index's size (the tables and indexes
the search migration added) are printed and written to bench/results/search-<database>[-<n>-processes].json.
Target: p99 < 100 ms at 1 000 000 lines.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Connection, make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.db import MIGRATIONS, Database  # noqa: E402
from backend.users.models import User  # noqa: E402
from bench.backend_process import (  # noqa: E402
    POSTGRES_URL,
    add_archivists,
    alogin,
    bench_database,
    cpu_seconds,
    latency_summary,
    running_backend,
)
from bench.search_letters import WRITERS, Query, generate, queries, writers  # noqa: E402

CACHE = ROOT / ".cache" / "bench-search"
# The last revision before search: what the search migration(s) added is the index.
BEFORE_SEARCH = "0005"
OVERALL = "overall"
# Documents a page of results asks for.
PAGE_SIZE = 20
# What decides the index's rows: the tables, the folding of words, the building of rows.
INDEX_SOURCES = ("models.py", "folding.py", "index.py")


def cache_key(lines: int, seed: int, noise: float, corrected: float) -> str:
    """What the cached database depends on: the archive's size and seed, the generator, the schema, the
    code that builds the index (not the code that searches it: a change there searches the same archive)."""
    digest = hashlib.sha256(f"{lines} {seed} {noise} {corrected}".encode())
    sources = [ROOT / "bench" / "search_letters.py"]
    sources += sorted((MIGRATIONS / "versions").glob("*.py"))
    sources += [ROOT / "backend" / "search" / name for name in INDEX_SOURCES]
    for source in sources:
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:16]


def _alembic(connection: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _relations(connection: Connection) -> set[str]:
    if connection.dialect.name == "sqlite":
        return set(
            connection.scalars(
                text(
                    # Not SQLite's own tables, but the indexes it makes for a primary key or a unique constraint.
                    "SELECT name FROM sqlite_schema WHERE type IN ('table', 'index') "
                    "AND (name NOT LIKE 'sqlite_%' OR name LIKE 'sqlite_autoindex_%')"
                )
            )
        )
    return set(
        connection.scalars(
            text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'i', 'm', 'p', 'S')"
            )
        )
    )


def migrate_noting_index(database: Database) -> list[str]:
    """Migrate to the newest revision; the names of the tables and indexes the search's migrations added."""
    with database.engine.begin() as connection:
        _alembic(connection, BEFORE_SEARCH)
        before = _relations(connection)
        _alembic(connection, "head")
        return sorted(_relations(connection) - before)


def index_size(database: Database, relations: list[str]) -> dict[str, Any]:
    """Bytes of each search relation, their sum, and the whole database's size for scale."""
    with database.engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            pages = {
                name: size
                for name, size in connection.execute(text("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"))
            }
            sizes = {name: int(pages.get(name, 0)) for name in relations}
            page_size = connection.scalar(text("PRAGMA page_size"))
            whole = int(connection.scalar(text("PRAGMA page_count")) or 0) * int(page_size or 0)
            lines_table = int(pages.get("lines", 0))
        else:
            sizes = {}
            rows = connection.execute(
                text(
                    "SELECT c.relname, c.relkind, t.relname FROM pg_class c "
                    "LEFT JOIN pg_index i ON i.indexrelid = c.oid LEFT JOIN pg_class t ON t.oid = i.indrelid "
                    "WHERE c.relname = ANY(:names)"
                ),
                {"names": relations},
            )
            for name, kind, table in rows:
                # A new table's total holds its indexes and TOAST; an index counts alone on an older table.
                if kind == "r":
                    sizes[name] = int(
                        connection.scalar(text("SELECT pg_total_relation_size(to_regclass(:n))"), {"n": name})
                    )
                elif kind == "i" and table not in relations:
                    sizes[name] = int(connection.scalar(text("SELECT pg_relation_size(to_regclass(:n))"), {"n": name}))
            whole = int(connection.scalar(text("SELECT pg_database_size(current_database())")) or 0)
            lines_table = int(connection.scalar(text("SELECT pg_total_relation_size('lines')")) or 0)
    return {
        "relations": sizes,
        "indexBytes": sum(sizes.values()),
        "linesTableBytes": lines_table,
        "databaseBytes": whole,
    }


def build(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Migrate, load the letters and build the search index in the empty database at ``url``; the figures."""
    from backend.search.index import rebuild

    database = Database(url)
    try:
        relations = migrate_noting_index(database)
        add_archivists(database, [f"searcher-{n:03d}" for n in range(args.clients)])
        with database.sessions() as session:
            owner = session.scalars(select(User.id).order_by(User.id)).first()
        assert owner is not None
        began = time.perf_counter()
        counts = generate(database, args.lines, args.seed, owner, noise=args.noise, corrected=args.corrected)
        loaded_s = time.perf_counter() - began
        print(f"loaded {counts['lines']} lines in {loaded_s:.1f} s", flush=True)
        began = time.perf_counter()
        indexed = rebuild(database.sessions)
        indexed_s = time.perf_counter() - began
        print(f"indexed {indexed} lines in {indexed_s:.1f} s", flush=True)
        _settle(database)
        return {
            "archive": counts,
            "writers": WRITERS,
            "loadSeconds": round(loaded_s, 1),
            "indexSeconds": round(indexed_s, 1),
            "linesIndexed": indexed,
            "searchRelations": relations,
        }
    finally:
        database.dispose()


def _settle(database: Database) -> None:
    """What the database's own housekeeping would have done by the time people search a loaded archive."""
    if database.engine.dialect.name == "sqlite":
        with database.engine.connect() as connection:
            connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        return
    # PostgreSQL's autovacuum would have analysed the tables and set the visibility map.
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))


def _add_missing_searchers(url: str, clients: int) -> None:
    database = Database(url)
    try:
        with database.engine.connect() as connection:
            have = set(connection.scalars(select(User.username)))
        missing = [f"searcher-{n:03d}" for n in range(clients) if f"searcher-{n:03d}" not in have]
        if missing:
            add_archivists(database, missing)
    finally:
        database.dispose()


def _cached_sqlite(args: argparse.Namespace, key: str, figures_file: Path) -> str:
    path = CACHE / f"sqlite-{args.lines}-{key}.db"
    if not (path.exists() and figures_file.exists()):
        # Built under another name and renamed when complete: a half-loaded one is never used.
        partial = path.with_suffix(".partial")
        for stale in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
            stale.unlink(missing_ok=True)
        figures_file.write_text(json.dumps(build(f"sqlite:///{partial}", args), indent=2))
        os.replace(partial, path)
        # Archives of this size made by other code: never used again, and 1 000 000 lines are ~1 GB.
        for stale in CACHE.glob(f"sqlite-{args.lines}-*"):
            if not stale.name.startswith(f"sqlite-{args.lines}-{key}"):
                stale.unlink()
    return f"sqlite:///{path}"


def _cached_postgresql(args: argparse.Namespace, key: str, figures_file: Path) -> str:
    name = f"bench_search_{args.lines}_{key}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            databases = set(connection.scalars(text("SELECT datname FROM pg_database")))
            if not (name in databases and figures_file.exists()):
                # Built under another name and renamed when complete: a half-loaded one is never used.
                partial = f"{name}_partial"
                connection.execute(text(f'DROP DATABASE IF EXISTS "{partial}" WITH (FORCE)'))
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                connection.execute(text(f'CREATE DATABASE "{partial}"'))
                partial_url = make_url(POSTGRES_URL).set(database=partial).render_as_string(hide_password=False)
                figures_file.write_text(json.dumps(build(partial_url, args), indent=2))
                connection.execute(text(f'ALTER DATABASE "{partial}" RENAME TO "{name}"'))
                # Archives of this size made by other code: never used again.
                for stale in databases:
                    if stale.startswith(f"bench_search_{args.lines}_") and stale != name:
                        connection.execute(text(f'DROP DATABASE IF EXISTS "{stale}" WITH (FORCE)'))
    finally:
        admin.dispose()
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


@contextmanager
def cached_archive(args: argparse.Namespace, folder: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The loaded archive's URL and its build figures: from the cache, or built now (and cached)."""
    if args.no_cache:
        with bench_database(args.database, folder) as url:
            yield url, build(url, args)
        return
    key = cache_key(args.lines, args.seed, args.noise, args.corrected)
    CACHE.mkdir(parents=True, exist_ok=True)
    figures_file = CACHE / f"{args.database}-{args.lines}-{key}.json"
    if args.database == "sqlite":
        url = _cached_sqlite(args, key, figures_file)
    else:
        url = _cached_postgresql(args, key, figures_file)
    for stale in CACHE.glob(f"{args.database}-{args.lines}-*.json"):
        if stale != figures_file:
            stale.unlink()
    print(f"archive: {url} (cached; --no-cache for a throw-away one)", flush=True)
    _add_missing_searchers(url, args.clients)
    yield url, json.loads(figures_file.read_text())


def _check(query: Query, body: dict[str, Any], page_size: int) -> None:
    """The answer has the contract's shape: a page of documents, each hit's highlights inside its text."""
    if not isinstance(body.get("total"), int) or len(body["results"]) > page_size:
        raise RuntimeError(f"search {query.params}: not a page of results: {str(body)[:300]}")
    for result in body["results"]:
        for hit in result["hits"]:
            for start, end in hit["highlights"]:
                if not 0 <= start < end <= len(hit["text"]):
                    raise RuntimeError(f"search {query.params}: highlight {start}-{end} outside {hit['text']!r}")


@dataclass(frozen=True)
class Sample:
    kind: str
    seconds: float
    found: bool
    # The search judged only the first APP_SEARCH_CANDIDATE_LINES matching lines (a very common word).
    capped: bool
    # The server's CPU seconds during this search (only measured while one search is in flight).
    server_cpu_s: float | None


@dataclass(frozen=True)
class _Answer:
    """An answer as received: parsed and checked after the timed searches (see Searcher)."""

    query: Query
    seconds: float
    body: bytes
    server_cpu_s: float | None

    def sample(self) -> Sample:
        body = json.loads(self.body)
        _check(self.query, body, PAGE_SIZE)
        return Sample(self.query.kind, self.seconds, body["total"] > 0, bool(body.get("capped")), self.server_cpu_s)


class Searcher:
    """One client with its own login; searches one after another, latencies kept per kind.

    With ``server``, the server's CPU time is read around each search: meaningful only while
    this is the only client (the serial phase). Each answer's status is checked at once, its body
    parsed and checked afterwards (``samples``): the clients share the server's two cores, and
    their CPU during the timed searches is then only sending and receiving.
    """

    def __init__(
        self,
        number: int,
        warmup: list[Query],
        timed: list[Query],
        think_s: float,
        seed: int,
        server: psutil.Process | None = None,
    ) -> None:
        self.number, self.warmup, self.timed = number, warmup, timed
        self.think_s = think_s
        self.rng = random.Random(seed * 1000 + number)
        self.server = server
        self.answers: list[_Answer] = []
        self.ready = False

    async def _search(self, client: httpx.AsyncClient, query: Query, record: bool) -> None:
        params = {"pageSize": str(PAGE_SIZE), **query.params}
        cpu_before = cpu_seconds(self.server) if self.server is not None else 0.0
        started = time.perf_counter()
        response = await client.get("/api/search", params=params)
        elapsed = time.perf_counter() - started
        cpu_s = cpu_seconds(self.server) - cpu_before if self.server is not None else None
        if response.status_code != 200:
            raise RuntimeError(f"search {query.params}: {response.status_code} {response.text[:300]}")
        answer = _Answer(query, elapsed, response.content, cpu_s)
        if record:
            self.answers.append(answer)
        else:
            answer.sample()  # a warm-up's answer is checked, not kept
        if self.think_s > 0:
            await asyncio.sleep(self.rng.uniform(0, 2 * self.think_s))

    async def run(self, url: str, start: asyncio.Event, *, wait: bool = True) -> None:
        # Idle connections closed before uvicorn's keep-alive (5 s) closes them under a request.
        limits = httpx.Limits(keepalive_expiry=4)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
            await alogin(client, f"searcher-{self.number:03d}")
            for query in self.warmup:
                await self._search(client, query, record=False)
            self.ready = True
            if wait:
                await start.wait()
            for query in self.timed:
                await self._search(client, query, record=True)

    def samples(self) -> list[Sample]:
        """The timed searches, each answer checked."""
        return [answer.sample() for answer in self.answers]


async def load(
    url: str, args: argparse.Namespace, server: psutil.Process
) -> tuple[list[Sample], list[Sample], float, float]:
    """The concurrent searches' samples, the serial ones', the wall and server CPU seconds of the concurrent."""
    rng = random.Random(args.seed)
    writer_list = writers(WRITERS)
    warmup = queries(rng, writer_list, args.warmup * args.clients)
    timed = queries(rng, writer_list, args.requests)
    searchers = [
        Searcher(
            n,
            warmup[n :: args.clients],
            timed[n :: args.clients],
            args.think_ms / 1000,
            args.seed,
        )
        for n in range(args.clients)
    ]
    start = asyncio.Event()
    tasks = [asyncio.create_task(s.run(url, start)) for s in searchers]
    # Every client logged in and warmed up, then the timed searches begin together.
    while not all(s.ready for s in searchers):
        if any(t.done() for t in tasks):
            await asyncio.gather(*tasks)  # a client failed: its error, not a hang
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    started, cpu_before = time.perf_counter(), cpu_seconds(server)
    start.set()
    await asyncio.gather(*tasks)
    seconds, cpu_s = time.perf_counter() - started, cpu_seconds(server) - cpu_before
    # Then one client alone: each kind's latency without a queue, and its server CPU.
    serial = Searcher(0, [], queries(rng, writer_list, args.serial), 0, args.seed, server)
    if args.serial:
        await serial.run(url, asyncio.Event(), wait=False)
    return [sample for s in searchers for sample in s.samples()], serial.samples(), seconds, cpu_s


def _per_kind(samples: list[Sample]) -> dict[str, dict[str, float]]:
    figures: dict[str, dict[str, float]] = {}
    for kind in [*sorted({sample.kind for sample in samples}), OVERALL]:
        mine = [sample for sample in samples if kind in {sample.kind, OVERALL}]
        figures[kind] = latency_summary([sample.seconds for sample in mine]) | {
            "found": round(sum(sample.found for sample in mine) / len(mine), 3),
            "capped": round(sum(sample.capped for sample in mine) / len(mine), 3),
        }
        cpu = [sample.server_cpu_s for sample in mine if sample.server_cpu_s is not None]
        if cpu:
            # psutil reads the kernel's 10 ms ticks: only the mean over many searches means something.
            figures[kind]["serverCpuMs"] = round(1000 * statistics.fmean(cpu), 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines in the archive")
    parser.add_argument("--clients", type=int, default=20, help="searches in flight at once")
    parser.add_argument("--requests", type=int, default=4000, help="timed searches, all clients together")
    parser.add_argument("--warmup", type=int, default=5, help="untimed searches per client first")
    parser.add_argument("--serial", type=int, default=300, help="searches by one client alone afterwards")
    parser.add_argument(
        "--search-processes", type=int, default=0, help="the backend's APP_SEARCH_PROCESSES (0: in its own process)"
    )
    parser.add_argument("--think-ms", type=float, default=0, help="mean pause between a client's searches")
    parser.add_argument("--noise", type=float, default=0.03, help="share of words the OCR misread")
    parser.add_argument("--corrected", type=float, default=0.05, help="share of lines a person corrected")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--no-cache", action="store_true", help="a throw-away database, loaded now, dropped after")
    parser.add_argument("--quick", action="store_true", help="a tiny run: 3 000 lines, 5 clients, 100 searches")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results", help="where the JSON goes")
    args = parser.parse_args()
    if args.quick:
        args.lines, args.clients, args.requests, args.warmup, args.serial = 3000, 5, 100, 2, 30

    with tempfile.TemporaryDirectory(prefix="bench-search-") as folder:
        with cached_archive(args, Path(folder)) as (url, built):
            with running_backend(
                url, Path(folder) / "storage", ocr_jobs_concurrency="0", search_processes=str(args.search_processes)
            ) as backend:
                # This process's own collections would hold every client at once and show up as the
                # server's latency: none while measuring (as bench_api.py).
                gc.collect()
                gc.freeze()
                gc.disable()
                try:
                    samples, serial, seconds, server_cpu_s = asyncio.run(
                        load(backend.url, args, psutil.Process(backend.process.pid))
                    )
                finally:
                    gc.enable()
            database = Database(url)
            try:
                size = index_size(database, built["searchRelations"])
            finally:
                database.dispose()

    figures = _per_kind(samples)
    lines = built["archive"]["lines"]
    result = {
        "machine": {"cores": os.cpu_count(), "loadAverage": [round(x, 2) for x in os.getloadavg()]},
        "database": args.database,
        **built,
        # Loading and indexing grow with the lines: what 1 000 000 would take at this run's rate.
        "loadSecondsPer1M": round(built["loadSeconds"] * 1_000_000 / lines),
        "indexSecondsPer1M": round(built["indexSeconds"] * 1_000_000 / lines),
        "indexSize": size,
        "clients": args.clients,
        "thinkMs": args.think_ms,
        "searchProcesses": args.search_processes,
        "searchesPerSecond": round(figures[OVERALL]["requests"] / seconds, 1),
        "serverCpuMsPerSearch": round(1000 * server_cpu_s / figures[OVERALL]["requests"], 2),
        "queries": figures,
        "serial": _per_kind(serial) if serial else {},
    }
    print(json.dumps(result, indent=2))
    out = args.results
    out.mkdir(parents=True, exist_ok=True)
    processes = f"-{args.search_processes}-processes" if args.search_processes else ""
    (out / f"search-{args.database}{processes}.json").write_text(json.dumps(result, indent=2) + "\n")
    overall = figures[OVERALL]
    print(
        f"\n{args.database}, {lines} lines: p50 {overall['p50_ms']} ms, p99 {overall['p99_ms']} ms "
        f"(target < 100 ms), {result['searchesPerSecond']} searches/s, {result['serverCpuMsPerSearch']} ms of "
        f"server CPU a search; index {size['indexBytes'] / 2**20:.1f} MiB of {size['databaseBytes'] / 2**20:.1f} MiB"
    )
    for kind, alone in result["serial"].items():
        print(
            f"  one client alone, {kind}: p50 {alone['p50_ms']} ms, p99 {alone['p99_ms']} ms, "
            f"{alone['serverCpuMs']} ms of server CPU a search, {alone['found']:.0%} found something"
        )


if __name__ == "__main__":
    main()
