"""The trainer process: ``python -m ocr_service.training.runner [--log-level LEVEL] JOB_DIR``.

The service starts one fresh process per job (as eScriptorium runs one job per worker
process) rather than training in a thread or a pool: memory is given back when the job
ends, a crash or an OOM kill of the trainer cannot take the service with it, and cancelling
or a stalled trainer is one ``killpg``. The process reads ``plan.json``, appends one JSON
line per event to ``progress.jsonl`` (the parent tails it), and writes ``result.json``.
It reads no ``OCR_*`` variable: what it needs of the settings comes as arguments.

Exit codes: 0 trained (the parent still judges the result), 2 the data or base model did
not fit (``result.json`` says why), anything else a crash (the traceback is in the log).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from ocr_service.engine import train as engine
from ocr_service.logs import configure_logging
from ocr_service.settings import LOG_LEVELS
from ocr_service.training.checkpoints import best_checkpoint
from ocr_service.training.jobs import write_json_atomic

log = logging.getLogger("ocr_service.training.runner")

PLAN_FILE = "plan.json"
PROGRESS_FILE = "progress.jsonl"
RESULT_FILE = "result.json"
MODEL_FILE = "model.safetensors"
OUTPUT_DIR = "checkpoints"
EXIT_DATA_ERROR = 2
EXIT_USAGE = 64
# Counting lines on a few pages is enough to tell "finds lines" from "finds none".
_CHECK_PAGES = 3


def _clean(value: Any) -> Any:
    # NaN/inf are not JSON; the event keeps a flag (nanLoss) instead.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class ProgressFile:
    def __init__(self, path: Path) -> None:
        self._handle = open(path, "a", encoding="utf-8")

    def emit(self, event: dict[str, Any]) -> None:
        line = json.dumps({k: _clean(v) for k, v in event.items()}, ensure_ascii=False)
        self._handle.write(line + "\n")
        self._handle.flush()


def run(job_dir: Path) -> int:
    plan = engine.TrainingPlan.from_json(json.loads((job_dir / PLAN_FILE).read_text(encoding="utf-8")))
    progress = ProgressFile(job_dir / PROGRESS_FILE)
    progress.emit({"type": "started", "pid": os.getpid()})
    try:
        engine.fit(plan, progress.emit)
    except engine.expected_training_errors() as exc:
        log.exception("training stopped on an error in the data or the base model")
        write_json_atomic(job_dir / RESULT_FILE, {"error": f"{type(exc).__name__}: {exc}"})
        return EXIT_DATA_ERROR
    progress.emit({"type": "heartbeat", "stage": "convert"})
    result: dict[str, Any] = {"error": None, "modelFile": None, "bestScore": None, "bestEpoch": None}
    best = best_checkpoint(Path(plan.output_dir))
    if best is not None:
        model = engine.convert_checkpoint(best.path, job_dir / MODEL_FILE)
        result.update(modelFile=str(model), bestScore=best.score, bestEpoch=best.epoch + 1)
        if plan.kind == "segmentation":
            progress.emit({"type": "heartbeat", "stage": "count-lines"})
            images = [Path(p) for p in plan.check_images[:_CHECK_PAGES]]
            result["linesFound"] = engine.count_lines(model, images, plan.threads, plan.device)
            result["pagesChecked"] = len(images)
    write_json_atomic(job_dir / RESULT_FILE, result)
    progress.emit({"type": "finished"})
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m ocr_service.training.runner")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="INFO")
    parser.add_argument("job_dir", type=Path)
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        return EXIT_USAGE
    configure_logging(args.log_level, False)
    return run(args.job_dir)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
