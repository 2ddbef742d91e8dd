"""The search's answers to the benchmark's seeded mix, to check that a faster search answers the same.

    .venv/bin/python bench/search_answers.py --url DATABASE_URL --out answers.jsonl [--searches 140]
        [--seed 15] [--pages 2] [--code DIR]
    .venv/bin/python bench/search_answers.py --url DATABASE_URL --against REV [--uncapped-only] [--searches 140] ...

``--url``: an archive loaded by ``bench/bench_search.py`` (see bench/search_cpu.py). Searches are
only read; still, run them on a copy of a cached SQLite archive (a connection may write its WAL).

Each search of the mix (bench/search_letters.py, ``pageSize`` 20 as in bench/search_cpu.py) is
asked for pages 1 to ``--pages`` (besides the page the mix asks for), and every answer is written
as one JSON line: the parameters and ``backend.search.service.search``'s answer as the API
returns it (documents, order, hits, highlights, total, capped).

- ``--out FILE``: write the answers there;
- ``--code DIR``: import ``backend`` from ``DIR`` (a checkout of another revision) instead of here;
- ``--against REV``: the answers of this tree and of git revision ``REV`` (its ``backend/``
  exported to a temporary folder, run with ``--code``), compared; exit 1 and the first
  differences printed where any answer differs. ``--uncapped-only``: where the cap cut both
  answers, only that both were cut is compared (for a change of which lines a cut search reads).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def answers(url: str, searches: int, seed: int, pages: int) -> list[dict[str, Any]]:
    from sqlalchemy.orm import Session

    from backend.db import make_engine
    from backend.search.schemas import SearchParams
    from backend.search.service import SearchLimits, search
    from backend.settings import Settings
    from bench.search_letters import WRITERS, queries, writers

    limits = SearchLimits.from_settings(Settings(database_url=url))
    engine = make_engine(url)
    asked: list[dict[str, str]] = []
    for query in queries(random.Random(seed), writers(WRITERS), searches):
        asked.append({"pageSize": "20", **query.params})
        for page in range(1, pages + 1):
            if str(page) != query.params.get("page", "1"):
                asked.append({"pageSize": "20", **query.params, "page": str(page)})
    found = []
    try:
        for params in asked:
            with Session(engine) as session:
                answer = search(session, SearchParams.model_validate(params), limits)
            found.append({"params": params, "answer": answer.model_dump(mode="json", by_alias=True)})
    finally:
        engine.dispose()
    return found


def _write(path: Path, found: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n" for item in found))


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _same(a: dict[str, Any], b: dict[str, Any], uncapped_only: bool) -> bool:
    if not uncapped_only or not (a["answer"]["capped"] or b["answer"]["capped"]):
        return a == b
    # Both cut by the cap: which of the many lines were read may differ; that it was cut may not.
    return bool(a["answer"]["capped"] and b["answer"]["capped"])


def compare(
    ours: list[dict[str, Any]], theirs: list[dict[str, Any]], shown: int = 5, uncapped_only: bool = False
) -> int:
    """How many answers differ (and the first ``shown`` of them printed); ``uncapped_only``: of
    two answers the cap cut, only that both were cut is compared."""
    if len(ours) != len(theirs):
        print(f"{len(ours)} answers here, {len(theirs)} there")
        return max(len(ours), len(theirs))
    differing = [(a, b) for a, b in zip(ours, theirs, strict=True) if not _same(a, b, uncapped_only)]
    for a, b in differing[:shown]:
        print(f"differs: {a['params']}")
        print(f"  here:  {json.dumps(a['answer'])[:600]}")
        print(f"  there: {json.dumps(b['answer'])[:600]}")
    return len(differing)


def against(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="search-answers-") as folder:
        code = Path(folder) / "code"
        code.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.against, "backend"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
        theirs_path = Path(folder) / "theirs.jsonl"
        common = ["--url", args.url, "--searches", str(args.searches), "--seed", str(args.seed)]
        common += ["--pages", str(args.pages)]
        subprocess.run([sys.executable, __file__, *common, "--out", str(theirs_path), "--code", str(code)], check=True)
        ours = answers(args.url, args.searches, args.seed, args.pages)
        differing = compare(ours, _read(theirs_path), uncapped_only=args.uncapped_only)
    capped = sum(1 for item in ours if item["answer"]["capped"])
    print(f"{len(ours)} answers ({capped} cut by the cap here), {differing} differ from {args.against}'s")
    return 1 if differing else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="a loaded, migrated archive (a copy: see above)")
    parser.add_argument("--searches", type=int, default=140, help="searches in the seeded mix")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--pages", type=int, default=2, help="each search's pages 1 to this too")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="write the answers here (JSON lines)")
    target.add_argument("--against", help="compare this tree's answers with git revision REV's")
    parser.add_argument("--code", type=Path, help="import backend from this folder (with --out)")
    parser.add_argument(
        "--uncapped-only",
        action="store_true",
        help="with --against: answers the cap cut on both sides count as the same (a change of which lines it reads)",
    )
    args = parser.parse_args()
    # backend from --code where given (ahead of this tree); bench/, the mix, always from this tree.
    sys.path[:0] = [*([str(args.code)] if args.code is not None else []), str(ROOT)]
    if args.against is not None:
        sys.exit(against(args))
    found = answers(args.url, args.searches, args.seed, args.pages)
    _write(args.out, found)
    import backend

    print(f"{len(found)} answers of {Path(backend.__file__).parent} written to {args.out}")


if __name__ == "__main__":
    main()
