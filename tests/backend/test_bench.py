"""The backend benchmarks run end to end at tiny sizes (``--quick``) and report what they measured.

No figure is compared with a target here (speed targets live in bench/ and the README); what
is checked is that every request was made, answered as expected and counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.backend.conftest import DATABASE_KIND

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, results: Path, *args: str, timeout_s: float = 600) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", "--results", str(results), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]


def _ordered(figures: dict[str, Any]) -> None:
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]


@pytest.mark.slow
def test_api_benchmark_makes_and_counts_every_request(tmp_path: Path) -> None:
    _run("bench_api.py", tmp_path, "--database", DATABASE_KIND, "--think-ms", "5")
    result = json.loads((tmp_path / f"api-{DATABASE_KIND}.json").read_text())
    assert result["clients"] == 5 and result["archive"]["documents"] == 40
    for operation in ("list", "lines", "correct"):
        assert result["operations"][operation]["requests"] == 5 * 2
        _ordered(result["operations"][operation])
    assert result["serverCpuMsPerRequest"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("mode", [[], ["--layers"]], ids=["process", "layers"])
def test_api_profile_measures_every_operation(tmp_path: Path, mode: list[str]) -> None:
    _run("profile_api.py", tmp_path, "--database", DATABASE_KIND, *mode)
    name = "layers" if mode else "cpu"
    result = json.loads((tmp_path / f"{name}-api-{DATABASE_KIND}.json").read_text())
    assert set(result["operations"]) == {"list", "lines", "correct"}
    for figures in result["operations"].values():
        if mode:
            assert 0 < figures["serviceMs"] < figures["wholeRequestAsgiMs"]
            assert figures["authenticationMs"] > 0
        else:
            assert 0 < figures["minMs"] <= figures["medianMs"]
            assert len(figures["repeatsMs"]) == 2


@pytest.mark.slow
def test_ocr_start_benchmark_sees_the_breaker_closed_then_open(tmp_path: Path) -> None:
    _run("bench_ocr_start.py", tmp_path, "--database", DATABASE_KIND)
    result = json.loads((tmp_path / "ocr_start.json").read_text())
    closed, opened = result["serviceDownBreakerClosed"], result["breakerOpen"]
    assert closed["starts"] == 3 and opened["starts"] == 30
    _ordered(closed)
    _ordered(opened)
    # Four attempts with back-off 0.1, 0.2, 0.4 s before the first job could fail.
    assert closed["firstJobFailedAfterS"] >= 0.7


@pytest.mark.slow
@pytest.mark.skipif(
    DATABASE_KIND == "postgresql",
    reason="the overhead benchmark runs on a SQLite archive of its own: the PostgreSQL pass would repeat it as is",
)
def test_backend_overhead_benchmark_stores_what_the_service_read(tmp_path: Path) -> None:
    _run("bench_backend_overhead.py", tmp_path, timeout_s=1200)
    result = json.loads((tmp_path / "backend_overhead.json").read_text())
    assert result["backend"]["pages"] == result["direct"]["pages"] == 1
    assert result["backend"]["lines"] == result["direct"]["lines"] > 0
    assert result["backend"]["seconds"] > 0 and result["direct"]["seconds"] > 0


@pytest.mark.slow
def test_training_data_benchmark_times_every_count(tmp_path: Path) -> None:
    _run("bench_training_data.py", tmp_path, "--database", DATABASE_KIND)
    result = json.loads((tmp_path / f"training-data-{DATABASE_KIND}.json").read_text())
    assert result["archive"]["lines"] == 40 * 100
    # A tenth of the lines corrected, a twentieth of the pages reviewed: some ground truth, not all.
    assert 0 < result["archive"]["groundTruthLines"] < 4000
    for call in ("recognition", "segmentation", "oneWriter", "everyWriter", "newLinesByWriter"):
        assert 0 < result["calls"][call]["p50_ms"] <= result["calls"][call]["max_ms"]


@pytest.mark.slow
def test_search_benchmark_times_every_kind_of_search(tmp_path: Path) -> None:
    # Served as a multi-core server would: searches in a worker process (APP_SEARCH_PROCESSES).
    _run("bench_search.py", tmp_path, "--database", DATABASE_KIND, "--no-cache", "--search-processes", "1")
    result = json.loads((tmp_path / f"search-{DATABASE_KIND}-1-processes.json").read_text())
    assert result["archive"]["lines"] == result["linesIndexed"] == 3000
    assert result["clients"] == 5
    assert result["searchProcesses"] == 1
    kinds = result["queries"]
    assert set(kinds) == {"common", "rare", "name", "fuzzy", "folded", "phrase", "exclusion", "overall"}
    assert kinds["overall"]["requests"] == 100 == sum(f["requests"] for k, f in kinds.items() if k != "overall")
    for figures in kinds.values():
        _ordered(figures)
        assert figures["p99_ms"] >= figures["p95_ms"] >= figures["p50_ms"]
    # Every letter has common words: most searches for one find something (some filters rule all out).
    assert kinds["common"]["found"] > 0.5
    # Then one client alone: each kind's latency without a queue, and the server's CPU for it.
    assert result["serial"]["overall"]["requests"] == 30
    assert result["serial"]["overall"]["serverCpuMs"] > 0
    _ordered(result["serial"]["overall"])
    size = result["indexSize"]
    assert 0 < size["indexBytes"] < size["databaseBytes"]
    assert result["serverCpuMsPerSearch"] > 0


@pytest.mark.slow
def test_search_answers_are_written_per_page_and_a_changed_one_is_found(tmp_path: Path) -> None:
    import argparse

    from bench.bench_search import build
    from bench.search_answers import compare

    url = f"sqlite:///{tmp_path / 'letters.db'}"
    build(url, argparse.Namespace(clients=1, lines=3000, seed=15, noise=0.03, corrected=0.05))
    written = tmp_path / "answers.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = ["--url", url, "--searches", "30", "--pages", "2", "--out", str(written)]
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "search_answers.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    answers = [json.loads(line) for line in written.read_text().splitlines()]
    # Each search of the mix on pages 1 and 2 (one of them the page the mix asks for).
    assert len(answers) == 60
    assert sorted(a["params"].get("page", "1") for a in answers) == ["1"] * 30 + ["2"] * 30
    assert any(a["answer"]["results"] for a in answers)
    assert compare(answers, [json.loads(json.dumps(a)) for a in answers]) == 0
    hit = next(a for a in answers if a["answer"]["results"])["answer"]["results"][0]["hits"][0]
    hit["exact"] = not hit["exact"]
    changed = [json.loads(line) for line in written.read_text().splitlines()]
    assert compare(answers, changed) == 1
