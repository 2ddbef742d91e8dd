"""Line geometry made fit for PAGE XML and ALTO: whole pixels inside the page, never too few points.

Stored outlines come from kraken (a polygon may reach past the page's edge) or from imported
files (anything); both formats want non-negative integer points, PAGE at least two per list.
A line whose geometry is degenerate still gets a valid outline and baseline, derived from what
it has, so its text is never dropped from an export.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from backend.transcripts.model import Point, TranscriptLine


def clamp_points(raw: Any, width: int, height: int) -> tuple[Point, ...]:
    """Stored ``[[x, y], ...]`` as whole pixels inside a ``width`` x ``height`` page; anything
    malformed (not a list of number pairs, NaN, infinity) gives no points at all."""
    if not isinstance(raw, list | tuple):
        return ()
    points: list[Point] = []
    for point in raw:
        if not (isinstance(point, list | tuple) and len(point) == 2 and all(_finite(v) for v in point)):
            return ()
        x, y = point
        points.append((_clamp(x, width), _clamp(y, height)))
    return tuple(points)


def _finite(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _clamp(value: float, size: int) -> int:
    return min(max(round(value), 0), max(size - 1, 0))


def bounding_box(points: Iterable[Point]) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the points, or None for none."""
    listed = list(points)
    if not listed:
        return None
    xs = [x for x, _ in listed]
    ys = [y for _, y in listed]
    return min(xs), min(ys), max(xs), max(ys)


def box_corners(box: tuple[int, int, int, int]) -> tuple[Point, ...]:
    x0, y0, x1, y1 = box
    return (x0, y0), (x1, y0), (x1, y1), (x0, y1)


def outline(line: TranscriptLine, width: int, height: int) -> tuple[Point, ...]:
    """The line's polygon inside the page; with fewer than three points, the box around whatever
    points it has (baseline included), and with none, a one-pixel box in the page's corner."""
    polygon = clamp_points(line.polygon, width, height)
    if len(polygon) >= 3:
        return polygon
    box = bounding_box(polygon + clamp_points(line.baseline, width, height))
    if box is None:
        box = (0, 0, min(1, width - 1), min(1, height - 1))
    return box_corners(box)


def baseline(line: TranscriptLine, width: int, height: int) -> tuple[Point, ...]:
    """The line's baseline inside the page (two points at least): a single point is doubled, and
    a line without one rests on the bottom edge of its outline."""
    points = clamp_points(line.baseline, width, height)
    if len(points) >= 2:
        return points
    if len(points) == 1:
        return points[0], points[0]
    box = bounding_box(outline(line, width, height))
    assert box is not None  # an outline always has points
    x0, _, x1, y1 = box
    return (x0, y1), (x1, y1)


def joined(points: Sequence[Point]) -> str:
    """``x1,y1 x2,y2 ...``: PAGE's points."""
    return " ".join(f"{x},{y}" for x, y in points)


def flat(points: Sequence[Point]) -> str:
    """``x1 y1 x2 y2 ...``: ALTO 4.2+'s BASELINE and POINTS as kraken and eScriptorium write them
    (eScriptorium's reader splits them at spaces only: given ``x,y`` pairs it drops the line's
    baseline and outline)."""
    return " ".join(f"{x} {y}" for x, y in points)
