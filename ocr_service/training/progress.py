"""The trainer's progress file: one JSON event per line, read as it grows."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocr_service.training.jobs import EpochMetrics

log = logging.getLogger(__name__)


class ProgressReader:
    """Reads the complete lines a trainer has appended to its progress file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                log.warning("ignoring a malformed progress line from the trainer: %r", line[:200])
                continue
            if isinstance(event, dict):
                events.append(event)
        return events


@dataclass(frozen=True)
class EpochReport:
    metrics: EpochMetrics
    nan_loss: bool


def epoch_report(event: dict[str, Any], next_epoch: int) -> EpochReport | None:
    """The metrics of an ``epoch`` event (None for any other event)."""
    if event.get("type") != "epoch":
        return None
    score = event.get("score")
    accuracy = round(float(score), 6) if isinstance(score, (int, float)) else None
    loss = event.get("loss")
    metrics = EpochMetrics(
        epoch=int(event.get("epoch", next_epoch)),
        accuracy=accuracy,
        cer=None if accuracy is None else round(1.0 - accuracy, 6),
        loss=float(loss) if isinstance(loss, (int, float)) else None,
    )
    return EpochReport(metrics, bool(event.get("nanLoss")))
