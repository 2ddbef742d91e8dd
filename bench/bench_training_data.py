"""Benchmark: counting training data on an archive of 100 000 lines (what the training page asks on every load).

    .venv/bin/python bench/bench_training_data.py [--database sqlite|postgresql] [--documents 1000]
        [--lines 100] [--corrected 0.1] [--reviewed 0.05] [--repeats 20] [--quick]

The archive is generated straight into the database as bench_api.py does it (40 writers,
kraken-like baselines and 16-point outlines), then ``--corrected`` of the lines get a
person's text and ``--reviewed`` of the pages a review. Each of the dataset functions the
training overview calls — the eligible pages for recognition and segmentation, every
writer's eligible pages, the new lines of every writer since a moment — is timed in this
process, ``--repeats`` times after one warm-up; p50 and max are printed and written to
bench/results/training-data-<database>.json. Target: p50 < 100 ms each at 100 000 lines.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, text, update

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.db import Database  # noqa: E402
from backend.documents.models import Line, Page, Writer  # noqa: E402
from backend.training.dataset import (  # noqa: E402
    eligible_by_writer,
    eligible_pages,
    new_lines_by_writer,
)
from backend.training.models import TrainingKind  # noqa: E402
from backend.users.models import User  # noqa: E402
from bench.backend_process import add_archivists, bench_database, migrated  # noqa: E402
from bench.bench_api import generate  # noqa: E402


def make_ground_truth(database: Database, corrected: float, reviewed: float, owner: int, seed: int) -> None:
    """Correct ``corrected`` of the lines (over a week) and review ``reviewed`` of the pages, chosen by ``seed``."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with database.engine.begin() as connection:
        line_ids = list(connection.scalars(select(Line.id)))
        page_ids = list(connection.scalars(select(Page.id)))
        chosen = rng.sample(line_ids, round(corrected * len(line_ids)))
        for n in range(0, len(chosen), 5000):
            batch = chosen[n : n + 5000]
            connection.execute(
                update(Line)
                .where(Line.id.in_(batch))
                .values(text="Liebe Mutter", corrected_by=owner, corrected_at=start + timedelta(days=n % 7))
            )
        connection.execute(
            update(Page)
            .where(Page.id.in_(rng.sample(page_ids, round(reviewed * len(page_ids)))))
            .values(reviewed_at=start + timedelta(days=3), reviewed_by=owner)
        )
        if connection.dialect.name == "postgresql":
            connection.execute(text("ANALYZE"))


def timed(call: Callable[[], Any], repeats: int) -> dict[str, float]:
    call()
    seconds = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - began)
    return {"p50_ms": round(1000 * statistics.median(seconds), 1), "max_ms": round(1000 * max(seconds), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--lines", type=int, default=100, help="lines per document")
    parser.add_argument("--pages", type=int, default=4, help="pages per document (the lines spread over them)")
    parser.add_argument("--corrected", type=float, default=0.1, help="share of the lines a person corrected")
    parser.add_argument("--reviewed", type=float, default=0.05, help="share of the pages a person reviewed")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--quick", action="store_true", help="a tiny run: 40 documents, 3 repeats")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results", help="where the JSON goes")
    args = parser.parse_args()
    if args.quick:
        args.documents, args.repeats = 40, 3

    with tempfile.TemporaryDirectory(prefix="bench-training-data-") as folder:
        with bench_database(args.database, Path(folder)) as url:
            database = migrated(url)
            try:
                add_archivists(database, ["erika"])
                with database.sessions() as session:
                    owner = session.scalars(select(User.id)).one()
                generate(database, args.documents, args.lines, args.pages, owner, args.seed)
                make_ground_truth(database, args.corrected, args.reviewed, owner, args.seed)
                with database.sessions() as session:
                    writers = list(session.scalars(select(Writer.id)))
                    # Half the writers had a run in the middle of the week of corrections.
                    since = {w: datetime(2026, 1, 4, tzinfo=UTC) if w % 2 else None for w in writers}
                    recognition = eligible_pages(session, TrainingKind.RECOGNITION)
                    calls: dict[str, Callable[[], Any]] = {
                        "recognition": lambda: eligible_pages(session, TrainingKind.RECOGNITION),
                        "segmentation": lambda: eligible_pages(session, TrainingKind.SEGMENTATION),
                        "oneWriter": lambda: eligible_pages(session, TrainingKind.WRITER, writers[0]),
                        "everyWriter": lambda: eligible_by_writer(session),
                        "newLinesByWriter": lambda: new_lines_by_writer(session, since),
                    }
                    figures = {name: timed(call, args.repeats) for name, call in calls.items()}
            finally:
                database.dispose()

    result = {
        "machine": {"cores": os.cpu_count(), "loadAverage": [round(x, 2) for x in os.getloadavg()]},
        "database": args.database,
        "archive": {
            "lines": args.documents * args.lines,
            "documents": args.documents,
            "writers": len(writers),
            "correctedShare": args.corrected,
            "reviewedShare": args.reviewed,
            "groundTruthLines": sum(page.lines for page in recognition),
            "eligiblePages": len(recognition),
        },
        "calls": figures,
    }
    print(json.dumps(result, indent=2))
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"training-data-{args.database}.json").write_text(json.dumps(result, indent=2) + "\n")
    worst = max(f["p50_ms"] for f in figures.values())
    print(f"\n{args.database}: slowest call p50 {worst} ms (target < 100 ms) at {args.documents * args.lines} lines")


if __name__ == "__main__":
    main()
