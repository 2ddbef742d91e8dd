"""What PAGE XML and ALTO readers share: a page read from one file, points and derived shapes.

A file's coordinates are kept as the file has them (in its own page size, ``width`` x
``height``); the import scales them to the page image it stores. Every refusal is
IMPORT_INVALID_XML naming the file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date

from backend.documents.models import DatePrecision
from backend.documents.schemas import parse_partial_date
from backend.errors import AppError, ErrorCode
from backend.schemas import storable
from backend.transcripts.model import Point, TranscriptLine

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
# ALTO's PointsType is loosely specified: "x y x y", "x,y x,y", "(x, y) (x, y)" are all written.
_SEPARATORS = re.compile(r"[\s,()]+")
Shape = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class ReadPage:
    """One page as its file describes it; ``width``/``height`` 0 where the file does not say."""

    image_name: str
    width: float
    height: float
    lines: tuple[TranscriptLine, ...]
    # The document's title, writer and date, where the file carries them (this archive's export).
    title: str | None = None
    writer: str | None = None
    date: date | None = None
    date_precision: DatePrecision | None = None


def partial_date(raw: str | None) -> tuple[date | None, DatePrecision | None]:
    """A file's "1917", "1917-03" or "1917-03-05"; anything else is no date (it is only a hint)."""
    if not raw:
        return None, None
    try:
        return parse_partial_date(raw.strip())
    except ValueError:
        return None, None


def one_line(raw: str | None, limit: int) -> str | None:
    """A name or title from a file: whitespace collapsed, bounded; None if nothing is left."""
    cleaned = " ".join("".join(ch for ch in (raw or "") if ch.isprintable()).split())[:limit]
    return cleaned or None


def invalid(shown: str, message: str) -> AppError:
    return AppError(ErrorCode.IMPORT_INVALID_XML, f"{shown}: {message}")


def numbers(raw: str, shown: str, what: str) -> list[float]:
    """The numbers of a coordinate list ("x,y x,y" in PAGE, "x y x y" in ALTO; either is taken)."""
    values: list[float] = []
    for token in _SEPARATORS.split(raw.strip()):
        if not token:
            continue
        if not _NUMBER.fullmatch(token):
            raise invalid(shown, f"{what} holds {token[:40]!r}, which is not a number.")
        value = float(token)
        if not math.isfinite(value) or abs(value) > 1e7:
            raise invalid(shown, f"{what} holds {token[:40]!r}, which is no page coordinate.")
        values.append(value)
    return values


def points(raw: str | None, shown: str, what: str) -> tuple[tuple[float, float], ...]:
    """Pairs of numbers; an odd count is refused, an empty list is no points."""
    if raw is None:
        return ()
    values = numbers(raw, shown, what)
    if len(values) % 2:
        raise invalid(shown, f"{what} has an odd number of coordinates.")
    return tuple(zip(values[0::2], values[1::2], strict=True))


def page_size(raw: str | None, shown: str, what: str) -> float:
    """A page's width or height as the file declares it; 0 where it does not. A size under one
    pixel (or unit) is refused: every coordinate is scaled by the image's size over it."""
    value = number(raw, shown, what)
    if value is None or value == 0:
        return 0.0
    if value < 1:
        raise invalid(shown, f"{what} is {raw!r}; a page is at least 1 wide and high.")
    return value


def number(raw: str | None, shown: str, what: str) -> float | None:
    if raw is None or not raw.strip():
        return None
    values = numbers(raw, shown, what)
    if len(values) != 1:
        raise invalid(shown, f"{what} is not one number.")
    return values[0]


def box(x: float, y: float, width: float, height: float) -> tuple[tuple[float, float], ...]:
    return ((x, y), (x + width, y), (x + width, y + height), (x, y + height))


def baseline_from_polygon(polygon: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
    """A straight baseline for a line that has only its outline.

    Like kraken's fallback for boxes, the baseline runs across the whole outline's width; it
    lies at 80 % of the outline's height from its top, where the letters of a line without
    long descenders stand (the outline usually leaves room below for descenders).
    """
    xs = [x for x, _ in polygon]
    ys = [y for _, y in polygon]
    top, bottom = min(ys), max(ys)
    y = top + 0.8 * (bottom - top)
    return ((min(xs), y), (max(xs), y))


def polygon_from_baseline(
    baseline: tuple[tuple[float, float], ...], page_height: float
) -> tuple[tuple[float, float], ...]:
    """An outline for a line that has only its baseline: the band above it a line's height high
    (a 60th of the page: a letter's line), and a little below it for descenders."""
    above = max(8.0, page_height / 60 if page_height else 40.0)
    below = above / 4
    upper = tuple((x, y - above) for x, y in baseline)
    lower = tuple((x, y + below) for x, y in reversed(baseline))
    return upper + lower


def _from_few_points(points: tuple[tuple[float, float], ...]) -> tuple[Shape, Shape]:
    """An outline of fewer than three points (some tools write a line's box as two corners, or
    its extent as two points on one height): as a (baseline, polygon) pair, either may be empty."""
    if not points:
        return (), ()
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    if max(xs) > min(xs) and max(ys) > min(ys):
        return (), box(min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
    if max(xs) > min(xs):
        return ((min(xs), ys[0]), (max(xs), ys[0])), ()
    return (), ()


def line(
    baseline: Shape,
    polygon: Shape,
    text: str,
    ocr_text: str | None,
    page_height: float,
    where: tuple[str, str],
) -> TranscriptLine | None:
    """A line from what the file gives, its text as the database stores it (control characters
    dropped). ``where``: the file and the line, as a refusal names them. Without a place (neither
    shape, nor two points that span one) it is None if it holds no text, and refused if it does:
    never imported without its text."""
    text = storable(text)
    if len(polygon) < 3 and len(baseline) < 2:
        baseline, polygon = _from_few_points(polygon + baseline)
        if len(polygon) < 3 and len(baseline) < 2:
            if text.strip():
                raise _unplaced(*where)
            return None
    if len(baseline) < 2:
        baseline = baseline_from_polygon(polygon)
    if len(polygon) < 3:
        polygon = polygon_from_baseline(baseline, page_height)
    return TranscriptLine(
        baseline=_rounded(baseline),
        polygon=_rounded(polygon),
        text=text,
        ocr_text=storable(ocr_text) if ocr_text is not None else None,
    )


def _unplaced(shown: str, which: str) -> AppError:
    return invalid(
        shown,
        f"{which} holds text but no outline or baseline to place it on the page "
        "(Coords/Baseline in PAGE; a box, Polygon or BASELINE in ALTO).",
    )


def _rounded(values: tuple[tuple[float, float], ...]) -> tuple[Point, ...]:
    return tuple((round(x), round(y)) for x, y in values)
