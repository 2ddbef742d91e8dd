"""The document view: one page of a document, its image with the lines drawn over it, and the
lines to correct, each under the crop of its line image.

The whole first view is rendered here (image, polygons, lines with their text), so the page is
readable before its script runs and becomes editable as soon as it does; the script saves each
correction through ``PATCH /api/lines/{id}`` and, after an OCR run, fetches this page again to
swap in the new lines (one renderer for the lines, not a second one in the script).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from babel.dates import format_date
from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from backend.deps import ServicesDep, SessionDep
from backend.documents.schemas import LineOut
from backend.documents.service import document_out
from backend.web.deps import UserPage

router = APIRouter(include_in_schema=False)

# Below this OCR confidence a line is shown as uncertain (and "next uncertain line" stops there):
# kraken's mean character confidence; lines under it are where a person's time is best spent.
UNCERTAIN_BELOW = 0.8


@dataclass(frozen=True)
class LineView:
    """A line as the view draws it: its polygon's points and bounding box in the OCR's pixels."""

    line: LineOut
    number: int
    points: str
    box: tuple[int, int, int, int]
    uncertain: bool

    @property
    def corrected(self) -> bool:
        return self.line.text is not None


def _pairs(value: Sequence[Any]) -> list[tuple[float, float]]:
    """The ``[[x, y], ...]`` points of a stored polygon or baseline; anything else is skipped."""
    pairs = []
    for point in value:
        if isinstance(point, (list, tuple)) and len(point) == 2:
            x, y = point
            if isinstance(x, (int, float)) and isinstance(y, (int, float)):
                pairs.append((float(x), float(y)))
    return pairs


def _number(value: float) -> str:
    """A coordinate for SVG: a hundredth of a pixel is finer than any screen shows it."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def line_view(line: LineOut, number: int) -> LineView:
    polygon = _pairs(line.polygon)
    outline = polygon or _pairs(line.baseline)
    if outline:
        xs = [x for x, _ in outline]
        ys = [y for _, y in outline]
        left, top = math.floor(min(xs)), math.floor(min(ys))
        box = (left, top, max(math.ceil(max(xs)) - left, 1), max(math.ceil(max(ys)) - top, 1))
    else:
        box = (0, 0, 1, 1)
    points = " ".join(f"{_number(x)},{_number(y)}" for x, y in polygon)
    confidence = line.ocr_confidence
    uncertain = line.text is None and confidence is not None and confidence < UNCERTAIN_BELOW
    return LineView(line, number, points, box, uncertain)


@router.get("/documents/{document_id}")
def document_view(
    document_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    page: UserPage,
    services: ServicesDep,
    session: SessionDep,
    number: Annotated[int, Query(alias="page", ge=1, le=2**31 - 1)] = 1,
    line: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    """``?page=N`` opens that page; ``&line=ID`` selects that line (search results link here)."""
    assert page.user is not None
    document = services.documents.get_for(session, document_id, page.user)
    pages = services.pages.pages(session, document)
    number = min(number, max(len(pages), 1))
    current = next((p for p in pages if p.number == number), None)
    found = services.lines.for_page(session, document, number)
    lines = [line_view(line_out, index) for index, line_out in enumerate(found, 1)]
    return page.render(
        "document.html",
        title=document.title,
        document=document_out(document),
        pages=pages,
        page_number=number,
        current_page=current,
        lines=lines,
        corrected_count=sum(1 for view in lines if view.corrected),
        uncertain_count=sum(1 for view in lines if view.uncertain),
        selected_line=line if any(view.line.id == line for view in lines) else None,
        reviewed_on=(
            format_date(current.reviewed_at, format="long", locale=page.language)
            if current is not None and current.reviewed_at is not None
            else ""
        ),
    )
