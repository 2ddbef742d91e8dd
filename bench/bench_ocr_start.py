"""Benchmark: what a person waits when starting OCR while the OCR service is down.

    .venv/bin/python bench/bench_ocr_start.py [--closed-starts 20] [--open-starts 500] [--backoff-s 2] [--quick]

``python -m backend`` runs as its own process on 127.0.0.1 with ``APP_OCR_URLS`` pointing at a
port nobody listens on (the OCR service is down), its job runner on, and otherwise the
operator's defaults (4 attempts, back-off 2 s doubling). Small PNG documents are uploaded
through the API (the runner reads their originals). Then, with one logged-in client:

1. Breaker closed: ``--closed-starts`` starts of ``POST /api/documents/{id}/ocr``, each on a
   document of its own, each checked to answer 202 with the breaker still CLOSED before and
   after (read from the backend's ``/metrics``). Starting only queues the job; the runner's
   calls (connection refused, retried with back-off) happen after the answer. How long the
   first job takes to be ``FAILED`` with ``OCR_SERVICE_UNAVAILABLE`` is reported too: that is
   how long the person waits to learn that the OCR failed.
2. Breaker open: once the runner's failures have opened the breaker (``/metrics`` says OPEN;
   ``APP_OCR_BREAKER_OPEN_S`` is 3600 so it stays open), ``--open-starts`` starts, each checked
   to answer 503 ``OCR_SERVICE_UNAVAILABLE`` at once (no job created). Target: p99 < 20 ms.

Results are printed and written to bench/results/ocr_start.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.backend_process import (  # noqa: E402
    add_archivists,
    bench_database,
    breaker_state,
    free_port,
    login,
    migrated,
    running_backend,
)


def _png(number: int) -> bytes:
    """A small page whose bytes differ per ``number`` (the same bytes twice would be a duplicate)."""
    image = Image.new("L", (64, 64), 255)
    image.putpixel((number % 64, (number // 64) % 64), 0)
    image.putpixel((63 - number % 64, 63 - (number // 64) % 64), number % 200)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "starts": len(ordered),
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
        "max_ms": round(1000 * ordered[-1], 2),
    }


def _start(client: httpx.Client, document_id: int, status: int) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = client.post(f"/api/documents/{document_id}/ocr")
    elapsed = time.perf_counter() - started
    if response.status_code != status:
        raise RuntimeError(f"start of document {document_id}: {response.status_code} {response.text[:300]}")
    return elapsed, response


def _wait_for(condition: str, check: Callable[[], bool], timeout_s: float) -> float:
    started = time.perf_counter()
    while not check():
        if time.perf_counter() - started > timeout_s:
            raise RuntimeError(f"not within {timeout_s} s: {condition}")
        time.sleep(0.05)
    return time.perf_counter() - started


def run(args: argparse.Namespace) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-ocr-start-") as folder,
        bench_database(args.database, Path(folder)) as url,
    ):
        database = migrated(url)
        add_archivists(database, ["starter"])
        database.dispose()
        settings = {
            "ocr_urls": f"http://127.0.0.1:{free_port()}",  # nobody listens there
            "ocr_backoff_s": str(args.backoff_s),
            "ocr_breaker_open_s": "3600",
            "ocr_poll_s": "0.2",
        }
        with (
            running_backend(url, Path(folder) / "storage", **settings) as backend,
            httpx.Client(base_url=backend.url, timeout=60) as client,
        ):
            login(client, "starter")
            documents = []
            for number in range(args.closed_starts):
                response = client.post(
                    "/api/documents", data={"title": f"Brief {number}"}, files={"file": ("brief.png", _png(number))}
                )
                response.raise_for_status()
                documents.append(int(response.json()["id"]))

            if breaker_state(backend) != "CLOSED":
                raise RuntimeError("the breaker is not closed before the first start")
            closed, jobs = [], []
            for document_id in documents:
                elapsed, response = _start(client, document_id, 202)
                closed.append(elapsed)
                jobs.append(int(response.json()["jobId"]))
            closed_after = breaker_state(backend)
            if closed_after != "CLOSED":
                raise RuntimeError(f"the breaker was {closed_after} after the timed starts; use fewer --closed-starts")

            def first_failed() -> bool:
                job = client.get(f"/api/ocr/jobs/{jobs[0]}").json()
                if job["status"] == "FAILED" and job["errorCode"] != "OCR_SERVICE_UNAVAILABLE":
                    raise RuntimeError(f"the job failed with {job['errorCode']}, not OCR_SERVICE_UNAVAILABLE")
                return bool(job["status"] == "FAILED")

            until_failed = _wait_for("the first job FAILED", first_failed, 300) + sum(closed)
            until_open = _wait_for("the breaker OPEN", lambda: breaker_state(backend) == "OPEN", 300)

            open_samples = []
            for number in range(args.open_starts):
                elapsed, response = _start(client, documents[number % len(documents)], 503)
                if response.json()["code"] != "OCR_SERVICE_UNAVAILABLE":
                    raise RuntimeError(f"breaker open: {response.text[:300]}")
                open_samples.append(elapsed)
            if breaker_state(backend) != "OPEN":
                raise RuntimeError("the breaker left OPEN during the timed starts")
    return {
        "machine": {"cores": os.cpu_count(), "loadAverage": [round(x, 2) for x in os.getloadavg()]},
        "database": args.database,
        "backoffS": args.backoff_s,
        "serviceDownBreakerClosed": _ms(closed) | {"firstJobFailedAfterS": round(until_failed, 1)},
        "breakerOpenedAfterFurtherS": round(until_open, 1),
        "breakerOpen": _ms(open_samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--closed-starts", type=int, default=20)
    parser.add_argument("--open-starts", type=int, default=500)
    parser.add_argument("--backoff-s", type=float, default=2.0, help="APP_OCR_BACKOFF_S (the operator's default: 2)")
    parser.add_argument("--quick", action="store_true", help="3 + 30 starts, back-off 0.1 s")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results", help="where the JSON goes")
    args = parser.parse_args()
    if args.quick:
        args.closed_starts, args.open_starts, args.backoff_s = 3, 30, 0.1
    result = run(args)
    print(json.dumps(result, indent=2))
    out = args.results
    out.mkdir(parents=True, exist_ok=True)
    (out / "ocr_start.json").write_text(json.dumps(result, indent=2) + "\n")
    closed, opened = result["serviceDownBreakerClosed"], result["breakerOpen"]
    print(
        f"\nstart, service down, breaker closed: p50 {closed['p50_ms']} ms, p99 {closed['p99_ms']} ms "
        f"(the job FAILED after {closed['firstJobFailedAfterS']} s)\n"
        f"start, breaker open: p50 {opened['p50_ms']} ms, p99 {opened['p99_ms']} ms (target < 20 ms)"
    )


if __name__ == "__main__":
    main()
