"""Benchmark: API latency with 50 people at work on an archive of 2 000 documents × 100 lines.

    .venv/bin/python bench/bench_api.py [--database sqlite|postgresql] [--documents 2000]
        [--lines 100] [--clients 50] [--rounds 20] [--think-ms 0] [--quick]

The archive is generated straight into the database (SQLAlchemy Core bulk inserts: writers,
documents, pages, lines with kraken-like baselines and polygons), then ``python -m backend``
serves it as its own process on 127.0.0.1 (SQLite in a temporary folder, or a PostgreSQL
database of its own on 127.0.0.1:5432, dropped afterwards). Each of ``--clients`` httpx
async clients logs in as a user of its own and then, ``--rounds`` times:

1. reads the next page of the document list (``GET /api/documents?limit=50``, following
   ``nextCursor`` from a random start, keyset paging),
2. reads one random document's lines (``GET /api/documents/{id}/lines``),
3. saves a correction of one of those lines (``PATCH /api/lines/{id}`` with its version; each
   client corrects only lines of its own, so no save is refused as stale),

with ``--think-ms`` (uniform 0–2× that, seeded) between requests; 0 is every client sending
its next request as soon as the last is answered (the worst case). A round of warm-up first.
Every answer is checked (status, and the lines' count). p50/p99/max per operation are
printed and written to bench/results/api-<database>.json. Target: p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import insert, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.db import Database  # noqa: E402
from backend.documents.models import DatePrecision, Document, DocumentStatus, Line, Page, Writer  # noqa: E402
from backend.users.models import User  # noqa: E402
from bench.backend_process import (  # noqa: E402
    add_archivists,
    alogin,
    bench_database,
    continue_sequences,
    cpu_seconds,
    flush_rows,
    latency_summary,
    migrated,
    running_backend,
)

WORDS = "lieber vater heute haben wir den brief erhalten und uns sehr gefreut mutter grüßt alle herzlich".split()
OPERATIONS = ("list", "lines", "correct")
CHUNK = 5000


def _line_geometry(rng: random.Random, index: int) -> tuple[list[list[int]], list[list[int]]]:
    """A baseline of 2 points and a boundary polygon of 16, like kraken's for a printed line."""
    y = 120 + 60 * index
    x0, x1 = rng.randint(80, 140), rng.randint(1000, 1160)
    baseline = [[x0, y], [x1, y + rng.randint(-3, 3)]]
    step = (x1 - x0) // 7
    top = [[x0 + i * step, y - 38 + rng.randint(-2, 2)] for i in range(8)]
    bottom = [[x1 - i * step, y + 10 + rng.randint(-2, 2)] for i in range(8)]
    return baseline, top + bottom


def generate(database: Database, documents: int, lines: int, pages: int, owner: int, seed: int) -> None:
    """``documents`` documents of ``pages`` pages with ``lines`` lines in all, ids from 1, in bulk."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    per_page = [lines // pages + (1 if p < lines % pages else 0) for p in range(pages)]
    writer_rows = [
        {"id": i, "name": f"Schreiber {i}", "slug": f"schreiber-{i}", "created_at": now} for i in range(1, 41)
    ]
    document_rows: list[dict[str, Any]] = []
    page_rows: list[dict[str, Any]] = []
    line_rows: list[dict[str, Any]] = []
    line_id = page_id = 0
    with database.engine.begin() as connection:
        connection.execute(insert(Writer), writer_rows)
        for d in range(1, documents + 1):
            title = f"Brief {d}: " + " ".join(rng.choices(WORDS, k=4))
            document_rows.append(
                {
                    "id": d,
                    "title": title,
                    "title_folded": title.casefold(),
                    "writer_id": rng.randint(1, len(writer_rows)),
                    "date": date(1890, 1, 1) + timedelta(days=rng.randint(0, 60 * 365)),
                    "date_precision": DatePrecision.DAY,
                    "original_filename": f"brief-{d}.pdf",
                    "media_type": "application/pdf",
                    "storage_key": f"originals/{d:032x}",
                    "sha256": hashlib.sha256(f"bench {d}".encode()).hexdigest(),
                    "size_bytes": 1_000_000,
                    "page_count": pages,
                    "status": DocumentStatus.DONE,
                    "created_by": owner,
                    "created_at": now - timedelta(seconds=documents - d),
                    "deleted_at": None,
                }
            )
            for number in range(1, pages + 1):
                page_id += 1
                page_rows.append(
                    {
                        "id": page_id,
                        "document_id": d,
                        "number": number,
                        "width": 1240,
                        "height": 1754,
                        "ocr_model": "default",
                        "ocr_at": now,
                    }
                )
                for index in range(per_page[number - 1]):
                    line_id += 1
                    baseline, polygon = _line_geometry(rng, index)
                    line_rows.append(
                        {
                            "id": line_id,
                            "page_id": page_id,
                            "order_index": index,
                            "baseline": baseline,
                            "polygon": polygon,
                            "ocr_text": " ".join(rng.choices(WORDS, k=8)),
                            "ocr_confidence": rng.uniform(0.6, 1.0),
                            "text": None,
                            "model_name": "default",
                            "version": 1,
                        }
                    )
                    if len(line_rows) >= CHUNK:
                        flush_rows(connection, Document, document_rows)
                        flush_rows(connection, Page, page_rows)
                        flush_rows(connection, Line, line_rows)
        flush_rows(connection, Document, document_rows)
        flush_rows(connection, Page, page_rows)
        flush_rows(connection, Line, line_rows)
        continue_sequences(connection)
        if connection.dialect.name == "postgresql":
            connection.execute(text("ANALYZE"))


class Person:
    """One client with its own login, paging, reading and correcting; latencies per operation."""

    def __init__(self, number: int, clients: int, documents: int, lines: int, think_s: float, seed: int) -> None:
        self.number, self.clients, self.documents, self.lines = number, clients, documents, lines
        self.think_s = think_s
        self.rng = random.Random(seed * 1000 + number)
        self.cursor: str | None = str(self.rng.randint(2, documents + 1))
        self.samples: dict[str, list[float]] = {op: [] for op in OPERATIONS}
        self.ready = False

    async def _timed(self, op: str, request: Any, record: bool) -> httpx.Response:
        started = time.perf_counter()
        response = await request
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"{op}: {response.status_code} {response.text[:300]}")
        if record:
            self.samples[op].append(elapsed)
        return response

    async def _think(self) -> None:
        if self.think_s > 0:
            await asyncio.sleep(self.rng.uniform(0, 2 * self.think_s))

    async def round(self, client: httpx.AsyncClient, record: bool) -> None:
        params = {"limit": "50"} | ({"cursor": self.cursor} if self.cursor else {})
        listed = await self._timed("list", client.get("/api/documents", params=params), record)
        page = listed.json()
        if len(page["items"]) == 0 and self.cursor is not None:
            raise RuntimeError("list: an empty page before the end")
        self.cursor = page["nextCursor"]
        await self._think()

        document = self.rng.randint(1, self.documents)
        lines = (await self._timed("lines", client.get(f"/api/documents/{document}/lines"), record)).json()
        if len(lines) != self.lines:
            raise RuntimeError(f"lines: document {document} has {len(lines)} lines, not {self.lines}")
        await self._think()

        mine = [line for line in lines if line["id"] % self.clients == self.number] or lines
        line = self.rng.choice(mine)
        body = {"text": f"{line['currentText']} ·{self.number}", "version": line["version"]}
        saved = (await self._timed("correct", client.patch(f"/api/lines/{line['id']}", json=body), record)).json()
        if saved["version"] != line["version"] + 1 or saved["text"] != body["text"]:
            raise RuntimeError(f"correct: line {line['id']} came back as {saved}")
        await self._think()

    async def run(self, url: str, username: str, rounds: int, start: asyncio.Event) -> None:
        # Idle connections closed before uvicorn's keep-alive (5 s) closes them under a request.
        limits = httpx.Limits(keepalive_expiry=4)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            await alogin(client, username)
            await self.round(client, record=False)  # warm-up: connections, caches
            self.ready = True
            await start.wait()
            # Each begins after a pause of its own, as people do: fifty requests in the same
            # millisecond would measure a queue of the benchmark's making (with --think-ms 0 they
            # still begin together: that is the saturation figure).
            await self._think()
            for _ in range(rounds):
                await self.round(client, record=True)


async def load(
    url: str, args: argparse.Namespace, server: psutil.Process
) -> tuple[dict[str, dict[str, float]], float, float]:
    """Latencies per operation, wall seconds and server CPU seconds of the timed rounds."""
    people = [
        Person(n, args.clients, args.documents, args.lines, args.think_ms / 1000, args.seed)
        for n in range(args.clients)
    ]
    start = asyncio.Event()
    tasks = [asyncio.create_task(p.run(url, f"client-{p.number:03d}", args.rounds, start)) for p in people]
    # Every client logged in and warmed up, then the timed rounds begin (each after its own pause).
    while not all(p.ready for p in people):
        if any(t.done() for t in tasks):
            await asyncio.gather(*tasks)  # a client failed: its error, not a hang
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    started, cpu_before = time.perf_counter(), cpu_seconds(server)
    start.set()
    await asyncio.gather(*tasks)
    seconds, cpu_s = time.perf_counter() - started, cpu_seconds(server) - cpu_before
    return {op: latency_summary([s for p in people for s in p.samples[op]]) for op in OPERATIONS}, seconds, cpu_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--lines", type=int, default=100, help="lines per document")
    parser.add_argument("--pages", type=int, default=4, help="pages per document (the lines spread over them)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20, help="list + lines + correction per client")
    parser.add_argument("--think-ms", type=float, default=1000, help="mean pause between a client's requests")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--quick", action="store_true", help="a tiny run: 40 documents, 5 clients, 2 rounds")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results", help="where the JSON goes")
    args = parser.parse_args()
    if args.quick:
        args.documents, args.clients, args.rounds = 40, 5, 2

    with tempfile.TemporaryDirectory(prefix="bench-api-") as folder, bench_database(args.database, Path(folder)) as url:
        database = migrated(url)
        try:
            add_archivists(database, [f"client-{n:03d}" for n in range(args.clients)])
            with database.sessions() as session:
                owner = session.scalars(select(User.id).order_by(User.id)).first()
            assert owner is not None
            began = time.perf_counter()
            generate(database, args.documents, args.lines, args.pages, owner, args.seed)
            generated_s = time.perf_counter() - began
            print(f"generated {args.documents} documents × {args.lines} lines in {generated_s:.1f} s", flush=True)
        finally:
            database.dispose()
        with running_backend(url, Path(folder) / "storage", ocr_jobs_concurrency="0") as backend:
            # This process's own collections (a full one walked the generated rows) would hold
            # every client at once and show up as the server's latency: none while measuring.
            gc.collect()
            gc.freeze()
            gc.disable()
            # The server's CPU per request: unlike the latencies, hardly moved by a busy neighbour.
            try:
                figures, seconds, server_cpu_s = asyncio.run(
                    load(backend.url, args, psutil.Process(backend.process.pid))
                )
            finally:
                gc.enable()

    requests = sum(f["requests"] for f in figures.values())
    result = {
        "machine": {"cores": os.cpu_count(), "loadAverage": [round(x, 2) for x in os.getloadavg()]},
        "database": args.database,
        "archive": {"documents": args.documents, "linesPerDocument": args.lines, "pagesPerDocument": args.pages},
        "clients": args.clients,
        "thinkMs": args.think_ms,
        "generatedSeconds": round(generated_s, 1),
        "requestsPerSecond": round(requests / seconds, 1),
        "serverCpuMsPerRequest": round(1000 * server_cpu_s / requests, 2),
        "operations": figures,
    }
    print(json.dumps(result, indent=2))
    out = args.results
    out.mkdir(parents=True, exist_ok=True)
    (out / f"api-{args.database}.json").write_text(json.dumps(result, indent=2) + "\n")
    worst = max(f["p99_ms"] for f in figures.values())
    print(
        f"\n{args.database}: worst p99 {worst} ms (target < 50 ms), {result['requestsPerSecond']} requests/s, "
        f"{result['serverCpuMsPerRequest']} ms of server CPU a request"
    )


if __name__ == "__main__":
    main()
