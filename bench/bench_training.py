"""Training benchmark: peak memory and seconds per epoch of the trainer process, both kinds.

Runs the service's own trainer process (``python -m ocr_service.training.runner``) on a fixed
generated set, as a training job would, and samples the RSS of its whole process tree with
psutil. Segmentation is trained at the service's training height (default 800 px) with the
default network; it must stay under 3 GB peak RSS (exit code 1 otherwise).

    .venv/bin/python bench/bench_training.py [--epochs 2] [--pages 4] [--lines 200] [--height 800]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ocr_service.engine.train import SEGMENTATION_SPEC, TrainingPlan
from ocr_service.training import runner
from ocr_service.training.datasets import scan_training_data
from tests.support.training_data import line_set, page_set, write_files

SEGMENTATION_LIMIT_BYTES = 3 * 1024**3


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def run_job(job_dir: Path, plan: TrainingPlan) -> dict[str, Any]:
    (job_dir / runner.PLAN_FILE).write_text(json.dumps(plan.to_json()), encoding="utf-8")
    started = time.monotonic()
    with open(job_dir / "trainer.log", "wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "ocr_service.training.runner", str(job_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, OMP_NUM_THREADS=str(plan.threads)),
        )
        proc = psutil.Process(child.pid)
        peak = 0
        epoch_times: list[float] = []
        seen = 0
        while child.poll() is None:
            try:
                peak = max(peak, tree_rss(proc))
            except psutil.NoSuchProcess:
                break
            lines = (
                (job_dir / runner.PROGRESS_FILE).read_text().splitlines()
                if (job_dir / runner.PROGRESS_FILE).exists()
                else []
            )
            for line in lines[seen:]:
                if json.loads(line).get("type") == "epoch":
                    epoch_times.append(time.monotonic())
            seen = len(lines)
            time.sleep(0.2)
    if child.returncode != 0:
        raise SystemExit(f"the trainer failed (exit {child.returncode}); see {job_dir / 'trainer.log'}")
    events = [json.loads(line) for line in (job_dir / runner.PROGRESS_FILE).read_text().splitlines()]
    epochs = [e for e in events if e.get("type") == "epoch"]
    # The first epoch includes loading the data; later ones are the steady cost.
    per_epoch = [b - a for a, b in zip([started, *epoch_times], epoch_times, strict=False)]
    return {
        "peakRssMb": round(peak / 1024**2),
        "secondsPerEpoch": [round(s, 1) for s in per_epoch],
        "totalSeconds": round(time.monotonic() - started, 1),
        "scores": [e.get("score") for e in epochs],
        "result": json.loads((job_dir / runner.RESULT_FILE).read_text()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--pages", type=int, default=4, help="segmentation pages (2000 x 2600 px, 20 lines)")
    parser.add_argument("--lines", type=int, default=200, help="recognition line images")
    parser.add_argument("--height", type=int, default=800, help="segmentation training height")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", choices=["recognition", "segmentation"])
    args = parser.parse_args()

    report: dict[str, Any] = {"cpus": os.cpu_count(), "threads": args.threads, "epochs": args.epochs}
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        root = Path(tmp)
        if args.only in (None, "recognition"):
            job = root / "recognition"
            write_files(job / "data", line_set(args.lines, seed=11))
            data = scan_training_data(job / "data", "recognition")
            plan = TrainingPlan(
                kind="recognition",
                data_format=data.data_format,
                training_files=[str(p) for p in data.files],
                output_dir=str(job / runner.OUTPUT_DIR),
                epochs=args.epochs,
                threads=args.threads,
            )
            print(f"recognition: {data.lines} lines, kraken's default network, {args.epochs} epochs ...", flush=True)
            report["recognition"] = {"lines": data.lines, **run_job(job, plan)}
        if args.only in (None, "segmentation"):
            job = root / "segmentation"
            write_files(
                job / "data",
                page_set(args.pages, seed=5, lines_per_page=20, width=2000, height=2600, font_size=48),
            )
            data = scan_training_data(job / "data", "segmentation")
            plan = TrainingPlan(
                kind="segmentation",
                data_format="xml",
                training_files=[str(p) for p in data.files],
                output_dir=str(job / runner.OUTPUT_DIR),
                epochs=args.epochs,
                threads=args.threads,
                spec=SEGMENTATION_SPEC.format(height=args.height),
                check_images=[str(p) for p in data.page_images[:1]],
            )
            print(f"segmentation: {data.pages} pages at {args.height} px, {args.epochs} epochs ...", flush=True)
            report["segmentation"] = {"pages": data.pages, "height": args.height, **run_job(job, plan)}
    print(json.dumps(report, indent=1))
    seg = report.get("segmentation")
    if seg and seg["peakRssMb"] * 1024**2 > SEGMENTATION_LIMIT_BYTES:
        print(f"FAIL: segmentation training peaked at {seg['peakRssMb']} MB (limit 3072 MB)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
