"""The training page's charts, drawn on the server as inline SVG: a run's accuracy and character
error rate per epoch, and the held-out CER of the new model against the model it would replace.

Only geometry is worked out here (points in the SVG's own coordinates); the template draws it
with its words and text alternative, so a chart needs no script and no style attribute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from backend.training.schemas import EpochOut

WIDTH, HEIGHT = 560, 240
# Room for the axis labels: left for the percentages, below for the epochs.
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 14, 40
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
MAX_EPOCH_TICKS = 10


@dataclass(frozen=True)
class Point:
    x: float
    y: float


@dataclass(frozen=True)
class Series:
    points: tuple[Point, ...]

    @property
    def path(self) -> str:
        """The ``points`` of an SVG polyline."""
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True)
class EpochChart:
    """Accuracy and CER (each 0..1) per epoch, in the SVG's coordinates; None where unknown."""

    accuracy: Series
    cer: Series
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    epochs: tuple[EpochOut, ...]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    bottom: float = TOP + PLOT_H
    right: float = LEFT + PLOT_W


def _x(index: int, count: int) -> float:
    # One epoch: a single point in the middle.
    return LEFT + (PLOT_W / 2 if count == 1 else PLOT_W * index / (count - 1))


def _y(share: float) -> float:
    return TOP + PLOT_H * (1 - min(max(share, 0.0), 1.0))


def epoch_chart(metrics: Sequence[EpochOut]) -> EpochChart | None:
    """The chart of a run's epochs, in epoch order; None when it has none yet."""
    epochs = tuple(sorted(metrics, key=lambda m: m.epoch))
    if not epochs:
        return None
    count = len(epochs)

    def series(values: Sequence[float | None]) -> Series:
        return Series(tuple(Point(_x(i, count), _y(v)) for i, v in enumerate(values) if v is not None))

    step = max(1, -(-count // MAX_EPOCH_TICKS))  # ceil: at most ten epoch labels
    x_ticks = tuple(Tick(_x(i, count), str(e.epoch)) for i, e in enumerate(epochs) if i % step == 0 or i == count - 1)
    y_ticks = tuple(Tick(_y(share), f"{round(share * 100)} %") for share in (0.0, 0.25, 0.5, 0.75, 1.0))
    return EpochChart(
        accuracy=series([e.accuracy for e in epochs]),
        cer=series([e.cer for e in epochs]),
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        epochs=epochs,
    )


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    length: float


@dataclass(frozen=True)
class HeldOutChart:
    """The held-out CER of the new model and of the model it would replace, as two bars."""

    new: Bar
    old: Bar
    width: int = WIDTH
    label_width: int = 0
    bar_height: int = 28

    @property
    def height(self) -> int:
        return self.bar_height * 2 + 24


HELDOUT_LABEL_W = 200
HELDOUT_BAR_W = WIDTH - HELDOUT_LABEL_W - 90


def heldout_chart(new_cer: float | None, old_cer: float | None, new_label: str, old_label: str) -> HeldOutChart | None:
    """Two bars on one scale (the larger CER fills the width); None unless both were measured."""
    if new_cer is None or old_cer is None:
        return None
    largest = max(new_cer, old_cer, 1e-9)

    def bar(label: str, value: float) -> Bar:
        return Bar(label, value, max(2.0, HELDOUT_BAR_W * value / largest))

    return HeldOutChart(new=bar(new_label, new_cer), old=bar(old_label, old_cer), label_width=HELDOUT_LABEL_W)
