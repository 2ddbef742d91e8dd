"""How a finished trainer process is judged: why it stopped, and whether its model learned anything."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from ocr_service.training import runner
from ocr_service.training.jobs import EpochMetrics

log = logging.getLogger(__name__)


def convergence_problem(kind: str, metrics: list[EpochMetrics], nan_loss: bool, result: dict[str, Any]) -> str | None:
    """Why a finished run has learned nothing usable, or None if its model may be installed."""
    if nan_loss:
        return "the training loss became NaN"
    score = result.get("bestScore")
    if score is None:
        return "no checkpoint with a validation score was written"
    scores = [m.accuracy for m in metrics if m.accuracy is not None] + [float(score)]
    if max(scores) <= 0.0:
        return "the validation accuracy stayed at 0"
    if kind == "segmentation" and not result.get("linesFound"):
        pages = result.get("pagesChecked", 0)
        return f"the trained model finds no lines on {pages} training page(s)"
    return None


def exit_reason(returncode: int, result: dict[str, Any] | None, log_tail: str) -> str:
    if returncode < 0:
        sig = -returncode
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        if sig == signal.SIGKILL:
            return f"the trainer process was killed ({name}), most likely because it ran out of memory"
        return f"the trainer process was killed by signal {name}"
    if returncode == runner.EXIT_DATA_ERROR and result and result.get("error"):
        return f"training stopped: {result['error']}"
    tail = f": {log_tail}" if log_tail else ""
    return f"the trainer process crashed (exit code {returncode}){tail}"


def last_line(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 4096))
            lines = [ln.strip() for ln in handle.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def read_result(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("the trainer's result %s cannot be read: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None
