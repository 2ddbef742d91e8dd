"""Judging a model: its character error rate (CER) on the held-out pages.

A held-out page is read again through the OCR service — the document's original, that one
page (``firstPage = lastPage = n``) — and the lines it finds are matched to the page's
ground-truth lines **by where they lie**, not by their order: the segmentation may find
lines in another order, split one or miss one, and a reading order is no proof that two
lines are the same.

Matching: a pair is a candidate when the area the two lines share covers at least half of
the smaller one; candidates are taken greedily, the best overlap (intersection over union)
first, so each OCR line matches at most one ground-truth line and the other way round.

CER = Σ errors / Σ ground-truth characters over all held-out lines, where errors are:
- a matched pair: the Levenshtein distance of the two texts (rapidfuzz);
- a ground-truth line no OCR line matches: all its characters (it was not read at all);
- an OCR line that matches no line of the page: all its characters, as insertions (it read
  something that is not there).
On a page nobody reviewed as a whole, only the corrected lines are ground truth; an OCR line
that lies on one of the page's other (uncorrected) lines is neither right nor wrong and is left
out. Texts are compared in Unicode NFC, without the whitespace at their ends. The CER may
exceed 1 (a reading full of insertions).
"""

from __future__ import annotations

import asyncio
import math
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from rapidfuzz.distance import Levenshtein
from shapely import box, make_valid
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.documents.models import Document, Line, Page
from backend.ocr_client import OcrClient
from backend.storage import Storage, local_file
from backend.training.dataset import ground_truth

SessionFactory = Callable[[], Session]
Point = tuple[float, float]

# The share of the smaller line that the two must share to be the same line.
MIN_COVER = 0.5


class UnusableReadingError(ValueError):
    """The OCR service's answer does not contain the page that was asked for."""


@dataclass(frozen=True)
class TextLine:
    """A line to compare: its text (None: a line of the page whose text nobody confirmed) and
    where it lies, in the page's pixels."""

    text: str | None
    polygon: tuple[Point, ...] = ()
    baseline: tuple[Point, ...] = ()


@dataclass(frozen=True)
class Tally:
    """Errors and ground-truth characters, summed over lines and pages."""

    errors: int = 0
    characters: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.errors + other.errors, self.characters + other.characters)

    @property
    def cer(self) -> float | None:
        """None when there is no ground-truth character to judge by."""
        return self.errors / self.characters if self.characters else None


def normalised(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


def points(value: Any) -> tuple[Point, ...]:
    """``[[x, y], …]`` as the OCR service and the database hold it; anything else is dropped."""
    if not isinstance(value, list | tuple):
        return ()
    found: list[Point] = []
    for item in value:
        if isinstance(item, list | tuple) and len(item) == 2:
            x, y = item
            if _number(x) and _number(y) and math.isfinite(x) and math.isfinite(y):
                found.append((float(x), float(y)))
    return tuple(found)


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def shape_of(line: TextLine) -> BaseGeometry | None:
    """The line's area: its polygon, or (no usable polygon) the box around all its points, one
    pixel wider on each side so a straight baseline has an area too. None: no geometry at all."""
    if len(line.polygon) >= 3:
        shape = make_valid(Polygon(line.polygon))
        if shape.area > 0:
            return shape
    every = line.polygon + line.baseline
    if not every:
        return None
    xs, ys = [x for x, _ in every], [y for _, y in every]
    return box(min(xs) - 1, min(ys) - 1, max(xs) + 1, max(ys) + 1)


def match_lines(truth: Sequence[TextLine], read: Sequence[TextLine]) -> list[tuple[int, int]]:
    """Pairs ``(truth index, read index)``, each line in at most one pair (see the module's doc)."""
    truth_shapes = [shape_of(line) for line in truth]
    read_shapes = [shape_of(line) for line in read]
    candidates: list[tuple[tuple[float, str, str, bytes, bytes], int, int]] = []
    for i, t in enumerate(truth_shapes):
        if t is None:
            continue
        for j, r in enumerate(read_shapes):
            if r is None:
                continue
            shared = t.intersection(r).area
            if shared <= 0 or shared < MIN_COVER * min(t.area, r.area):
                continue
            overlap = shared / (t.area + r.area - shared)
            # Ties are broken by the lines' content, never by their position in the lists: the
            # result must not depend on the order the lines came in.
            key = (-overlap, truth[i].text or "", read[j].text or "", t.wkb, r.wkb)
            candidates.append((key, i, j))
    candidates.sort(key=lambda candidate: candidate[0])
    pairs: list[tuple[int, int]] = []
    used_truth: set[int] = set()
    used_read: set[int] = set()
    for _, i, j in candidates:
        if i not in used_truth and j not in used_read:
            used_truth.add(i)
            used_read.add(j)
            pairs.append((i, j))
    return pairs


def score_page(truth: Sequence[TextLine], read: Sequence[TextLine]) -> Tally:
    """The errors of ``read`` against ``truth`` (lines with text None: known, not judged)."""
    pairs = match_lines(truth, read)
    matched_truth = {i for i, _ in pairs}
    matched_read = {j for _, j in pairs}
    errors = characters = 0
    for i, j in pairs:
        expected = truth[i].text
        if expected is not None:
            expected = normalised(expected)
            errors += Levenshtein.distance(expected, normalised(read[j].text or ""))
            characters += len(expected)
    for i, line in enumerate(truth):
        if i not in matched_truth and line.text is not None:
            missed = len(normalised(line.text))
            errors += missed
            characters += missed
    errors += sum(len(normalised(line.text or "")) for j, line in enumerate(read) if j not in matched_read)
    return Tally(errors, characters)


@dataclass(frozen=True)
class HeldoutPage:
    page_id: int
    number: int
    storage_key: str
    # The page's pixels as the database holds its lines (None: not known yet).
    size: tuple[int, int] | None
    # Its ground-truth lines, then its other lines (text None).
    lines: tuple[TextLine, ...]


def heldout_pages(session: Session, page_ids: Sequence[int]) -> list[HeldoutPage]:
    """The held-out pages that still have ground truth; pages deleted since, or in the trash,
    drop out (ground truth never counts lines of trashed documents)."""
    rows = session.execute(
        select(Page, Document.storage_key)
        .join(Document, Document.id == Page.document_id)
        .where(Page.id.in_(list(page_ids)), Document.deleted_at.is_(None))
        .order_by(Page.id)
    ).all()
    pages: list[HeldoutPage] = []
    for page, storage_key in rows:
        truth = ground_truth(session, page.id)
        if not any(normalised(line.text) for line in truth):
            continue
        known = {line.order_index for line in truth}
        others = session.scalars(select(Line).where(Line.page_id == page.id).order_by(Line.order_index))
        lines = [TextLine(line.text, points(line.polygon), points(line.baseline)) for line in truth]
        lines += [
            TextLine(None, points(line.polygon), points(line.baseline))
            for line in others
            if line.order_index not in known
        ]
        size = (page.width, page.height) if page.width and page.height else None
        pages.append(HeldoutPage(page.id, page.number, storage_key, size, tuple(lines)))
    return pages


def read_lines(answer: dict[str, Any], page: HeldoutPage) -> list[TextLine]:
    """The lines of ``page`` in an ``/ocr`` answer, in the page's pixels as the database holds them."""
    found = [p for p in answer.get("pages") or () if isinstance(p, dict) and p.get("page") == page.number]
    if len(found) != 1 or not isinstance(found[0].get("lines"), list):
        raise UnusableReadingError(f"The OCR service's answer has no page {page.number} with lines.")
    entry = found[0]
    scale_x = scale_y = 1.0
    width, height = entry.get("width"), entry.get("height")
    if page.size and _number(width) and _number(height) and width > 0 and height > 0:
        # The service reads the page at the size the database's lines are in; should it ever
        # read it at another, its lines are brought into the database's pixels.
        scale_x, scale_y = page.size[0] / width, page.size[1] / height
    lines: list[TextLine] = []
    for item in entry["lines"]:
        if not isinstance(item, dict):
            continue
        text = item.get("text")
        polygon = points(item.get("polygon")) or _bbox_points(item.get("bbox"))
        lines.append(
            TextLine(
                text if isinstance(text, str) else "",
                tuple((x * scale_x, y * scale_y) for x, y in polygon),
                tuple((x * scale_x, y * scale_y) for x, y in points(item.get("baseline"))),
            )
        )
    return lines


def _bbox_points(value: Any) -> tuple[Point, ...]:
    if isinstance(value, list) and len(value) == 4:
        corners = points([value[:2], value[2:]])
        if len(corners) == 2:
            (x0, y0), (x1, y1) = corners
            return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
    return ()


async def heldout_cer(
    ocr: OcrClient, sessions: SessionFactory, storage: Storage, page_ids: Sequence[int], model: str | None
) -> float | None:
    """The CER of ``model`` (None: the OCR service's default) on the held-out pages.

    Each page is read on its own through the resilient client (retry, breaker, deadline); no
    database session is open while the service reads. None when the pages hold no ground-truth
    character any more (deleted, or trashed since the run started). Raises the client's
    ``OcrClientError``, ``OSError`` (the original cannot be read) or ``UnusableReadingError``.
    """

    def load() -> list[HeldoutPage]:
        with sessions() as session:
            return heldout_pages(session, page_ids)

    tally = Tally()
    for page in await asyncio.to_thread(load):
        original = await asyncio.to_thread(local_file, storage, page.storage_key)
        with original:
            answer = await ocr.ocr_document(original, model=model, first_page=page.number, last_page=page.number)
        tally += score_page(page.lines, read_lines(answer, page))
    return tally.cer
