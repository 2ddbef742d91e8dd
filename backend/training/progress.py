"""The OCR service's training job, as a run stores it: progress read defensively from its JSON.

Every number is checked (a JSON ``NaN`` from the trainer would be refused by PostgreSQL's
JSONB, and a non-number must not end up on the admin page); segmentation's CER is
``1 − accuracy`` where the service sends none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# The service's notes are short sentences; a run keeps a bounded number of bounded notes.
_MAX_NOTES = 50
_MAX_NOTE = 1000
_STATUSES = frozenset({"QUEUED", "RUNNING", "DONE", "FAILED", "CANCELLED"})


def _rate(value: Any) -> float | None:
    if type(value) not in (int, float) or not math.isfinite(value):
        return None
    return float(value)


def _cer(cer: Any, accuracy: float | None, segmentation: bool) -> float | None:
    rate = _rate(cer)
    if rate is None and segmentation and accuracy is not None:
        return 1.0 - accuracy
    return rate


@dataclass(frozen=True)
class JobState:
    """What the run records of one answer of ``GET /train/jobs/{id}``; ``status`` None: unreadable."""

    status: str | None
    epoch: int | None
    metrics: list[dict[str, Any]]
    accuracy: float | None
    cer: float | None
    info: list[str]
    model_version: str | None
    error: str | None

    def values(self) -> dict[str, Any]:
        """The run's columns this answer updates."""
        values: dict[str, Any] = {"metrics": self.metrics, "info": self.info}
        for name in ("epoch", "accuracy", "cer", "model_version"):
            value = getattr(self, name)
            if value is not None:
                values[name] = value
        return values


def job_state(job: dict[str, Any], *, segmentation: bool) -> JobState:
    status = job.get("status")
    metrics: list[dict[str, Any]] = []
    for entry in job.get("metrics") or []:
        if not isinstance(entry, dict) or type(entry.get("epoch")) is not int:
            continue
        accuracy = _rate(entry.get("accuracy"))
        metrics.append(
            {"epoch": entry["epoch"], "accuracy": accuracy, "cer": _cer(entry.get("cer"), accuracy, segmentation)}
        )
    accuracy = _rate(job.get("accuracy"))
    notes = job.get("info")
    info = [note[:_MAX_NOTE] for note in notes if isinstance(note, str)][:_MAX_NOTES] if isinstance(notes, list) else []
    epoch = job.get("epoch")
    version = job.get("modelVersion")
    error = job.get("error")
    return JobState(
        status=status if isinstance(status, str) and status in _STATUSES else None,
        epoch=epoch if type(epoch) is int and epoch >= 0 else None,
        metrics=metrics,
        accuracy=accuracy,
        cer=_cer(job.get("cer"), accuracy, segmentation),
        info=info,
        model_version=str(version)
        if type(version) is int or (isinstance(version, str) and 0 < len(version) <= 100)
        else None,
        error=error[:_MAX_NOTE] if isinstance(error, str) and error else None,
    )
