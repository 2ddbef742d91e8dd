"""The OCR service's training job, as a run stores it: progress read defensively from its JSON.

Every number is checked (a JSON ``NaN`` from the trainer would be refused by PostgreSQL's
JSONB, and a non-number must not end up on the admin page); segmentation's CER is
``1 − accuracy`` where the service sends none.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

# The service's notes are short sentences; a run keeps a bounded number of bounded notes.
_MAX_NOTES = 50
_MAX_NOTE = 1000
_STATUSES = frozenset({"QUEUED", "RUNNING", "DONE", "FAILED", "CANCELLED"})
# What the database cannot store (PostgreSQL refuses NUL in text and JSONB; no encoding holds a
# lone surrogate): dropped, else recording the answer fails every time and the run never ends.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# The run's INTEGER columns (epoch) on both databases.
_MAX_INT = 2**31 - 1


def storable(text: str, limit: int) -> str:
    """``text`` as the database can store it, at most ``limit`` characters."""
    return _UNSTORABLE.sub("", text)[:limit]


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
    entries = job.get("metrics")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or type(entry.get("epoch")) is not int:
            continue
        accuracy = _rate(entry.get("accuracy"))
        metrics.append(
            {"epoch": entry["epoch"], "accuracy": accuracy, "cer": _cer(entry.get("cer"), accuracy, segmentation)}
        )
    accuracy = _rate(job.get("accuracy"))
    notes = job.get("info")
    info = (
        [storable(note, _MAX_NOTE) for note in notes if isinstance(note, str)][:_MAX_NOTES]
        if isinstance(notes, list)
        else []
    )
    epoch = job.get("epoch")
    version = job.get("modelVersion")
    # A number or a short text (the column holds 100 characters; a huge number is no version).
    version = str(version) if type(version) is int else version
    version = _UNSTORABLE.sub("", version) if isinstance(version, str) else None
    error = job.get("error")
    error = storable(error, _MAX_NOTE) if isinstance(error, str) else None
    return JobState(
        status=status if isinstance(status, str) and status in _STATUSES else None,
        epoch=epoch if type(epoch) is int and 0 <= epoch <= _MAX_INT else None,
        metrics=metrics,
        accuracy=accuracy,
        cer=_cer(job.get("cer"), accuracy, segmentation),
        info=info,
        model_version=version if version and len(version) <= 100 else None,
        error=error or None,
    )
