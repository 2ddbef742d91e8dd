"""Benchmark: a document through the backend vs the same document straight through the OCR service.

    .venv/bin/python bench/bench_backend_overhead.py [--pages 6] [--lines 20] [--repeats 3] [--quick]

The real OCR service (``python -m ocr_service``, the tiny test recognition model from
tests/support/models.py, pages at 150 dpi) and ``python -m backend`` (its job runner on,
the operator's defaults otherwise, SQLite) run as processes of their own on 127.0.0.1.
Generated pages as in bench_ocr.py (no real scan can be downloaded on the build machines).

- Backend: upload the PDF (``POST /api/documents``), start OCR (``POST
  /api/documents/{id}/ocr``), poll ``GET /api/ocr/jobs/{id}`` every 50 ms until ``DONE``: every
  line is stored then (checked: as many lines as the direct read found). Each repetition
  uploads a copy that differs by a trailing PDF comment (the same bytes twice are refused).
- Direct: the same PDF through ``POST /ocr/stream`` until its ``done`` event.

Repetitions alternate (backend, direct, backend, …) so a busy neighbour slows both alike,
after one unmeasured warm-up run of each; the medians are compared. Target: the backend at
most 5 % slower. The runner looks for queued jobs every ``APP_OCR_POLL_S`` (1 s), which is
part of what the backend costs. Results go to bench/results/backend_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.backend_process import add_archivists, bench_database, login, migrated, running_backend  # noqa: E402
from bench.bench_ocr import make_pdf, running_service  # noqa: E402
from tests.support.models import tiny_recognition_model  # noqa: E402


def through_backend(client: httpx.Client, pdf: bytes, copy: int) -> dict[str, float]:
    # A PDF comment after %%EOF: other bytes (not a duplicate), the same document to every reader.
    started = time.perf_counter()
    uploaded = client.post(
        "/api/documents",
        data={"title": f"Brief {copy}"},
        files={"file": ("brief.pdf", pdf + f"%copy {copy}\n".encode())},
    )
    uploaded.raise_for_status()
    document_id = uploaded.json()["id"]
    started_ocr = client.post(f"/api/documents/{document_id}/ocr")
    started_ocr.raise_for_status()
    job_id = started_ocr.json()["jobId"]
    # Waited for as the web page waits: on the job's event stream, which says "end" once the job
    # has ended (it looks at the database every APP_OCR_POLL_S, so up to that late). Polling the
    # job 20 times a second instead took CPU from the OCR workers on a 2-core machine and made
    # the backend look slower than it is.
    job: dict[str, Any] = {}
    with client.stream("GET", f"/api/ocr/jobs/{job_id}/events") as events:
        events.raise_for_status()
        kind = ""
        for raw in events.iter_lines():
            if raw.startswith("event: "):
                kind = raw.removeprefix("event: ")
            elif raw.startswith("data: ") and kind == "end":
                job = json.loads(raw.removeprefix("data: "))
                break
    if job.get("status") != "DONE":
        raise RuntimeError(f"the OCR job did not end DONE: {job}")
    seconds = time.perf_counter() - started
    lines = client.get(f"/api/documents/{document_id}/lines").json()
    return {"seconds": seconds, "pages": job["pagesDone"], "lines": len(lines)}


def through_service(client: httpx.Client, pdf: bytes) -> dict[str, float]:
    started = time.perf_counter()
    lines = pages = 0
    with client.stream("POST", "/ocr/stream", files={"file": ("brief.pdf", pdf)}) as stream:
        stream.raise_for_status()
        for raw in stream.iter_lines():
            if not raw:
                continue
            event = json.loads(raw)
            lines += event["type"] == "line"
            pages += event["type"] == "page"
            if event["type"] == "error":
                raise RuntimeError(f"the OCR service failed: {event}")
    return {"seconds": time.perf_counter() - started, "pages": pages, "lines": lines}


def _median(runs: list[dict[str, float]]) -> dict[str, Any]:
    return {
        "seconds": round(statistics.median(r["seconds"] for r in runs), 2),
        "runs": [round(r["seconds"], 2) for r in runs],
        "pages": runs[0]["pages"],
        "lines": runs[0]["lines"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--lines", type=int, default=20, help="printed lines per page")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 narrow page of 3 short lines, 1 repetition")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results", help="where the JSON goes")
    args = parser.parse_args()
    if args.quick:
        args.pages, args.lines, args.repeats = 1, 3, 1
    model = tiny_recognition_model("safetensors")
    # Quick (the suite's check that the benchmark runs): a page a third as wide, read three times as fast.
    pdf = make_pdf(args.pages, args.lines, width=440, words=2) if args.quick else make_pdf(args.pages, args.lines)

    with running_service(model) as service, tempfile.TemporaryDirectory(prefix="bench-overhead-") as folder:
        health = service.get("/health").json()
        with bench_database("sqlite", Path(folder)) as url:
            database = migrated(url)
            add_archivists(database, ["reader"])
            database.dispose()
            settings = {"ocr_urls": str(service.base_url).rstrip("/"), "ocr_jobs_concurrency": str(health["workers"])}
            with (
                running_backend(url, Path(folder) / "storage", **settings) as backend,
                httpx.Client(base_url=backend.url, timeout=60) as client,
            ):
                login(client, "reader")
                print("warm-up: backend, then the service", flush=True)
                through_backend(client, pdf, 0)
                through_service(service, pdf)
                backend_runs, direct_runs = [], []
                for repeat in range(1, args.repeats + 1):
                    backend_runs.append(through_backend(client, pdf, repeat))
                    direct_runs.append(through_service(service, pdf))
                    print(
                        f"  {repeat}: backend {backend_runs[-1]['seconds']:.1f} s, "
                        f"service {direct_runs[-1]['seconds']:.1f} s",
                        flush=True,
                    )
    for b, d in zip(backend_runs, direct_runs, strict=True):
        if (b["pages"], b["lines"]) != (d["pages"], d["lines"]):
            raise RuntimeError(f"the backend stored {b['pages']} pages / {b['lines']} lines, the service read {d}")

    through, direct = _median(backend_runs), _median(direct_runs)
    overhead = through["seconds"] / direct["seconds"] - 1
    result = {
        "machine": {"cores": os.cpu_count(), "loadAverage": [round(x, 2) for x in os.getloadavg()]},
        "document": {"pages": args.pages, "linesPerPage": args.lines, "dpi": 150, "kind": "generated"},
        "service": {"workers": health["workers"], "threadsPerWorker": health["threadsPerWorker"]},
        "backend": through,
        "direct": direct,
        "overheadPercent": round(100 * overhead, 1),
    }
    print(json.dumps(result, indent=2))
    out = args.results
    out.mkdir(parents=True, exist_ok=True)
    (out / "backend_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\n{args.pages} pages: backend {through['seconds']} s vs /ocr/stream {direct['seconds']} s "
        f"= {100 * overhead:+.1f} % (target <= +5 %)"
    )


if __name__ == "__main__":
    main()
