"""The search page: the archive's lines found for a query, grouped by document, each hit a link
that opens the document at that line. Server-rendered through the same service as GET /api/search,
so a search (with its filters) is a link a person can keep or share."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Annotated
from urllib.parse import urlencode

from babel.dates import format_date, format_skeleton
from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.responses import Response

from backend.deps import ServicesDep, SessionDep
from backend.documents.models import DatePrecision, DocumentStatus
from backend.errors import AppError, ErrorCode
from backend.search.schemas import SearchOut, SearchParams
from backend.web.deps import UserPage
from backend.web.i18n import N_
from backend.writers.schemas import WriterFilter, WriterSummaryOut
from backend.writers.service import Writers

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 20
# The search's refusals the page says above its form (others are the app's error page).
_SAID_ON_THE_PAGE = frozenset({ErrorCode.SEARCH_QUERY_INVALID, ErrorCode.SEARCH_BUSY, ErrorCode.SEARCH_UNAVAILABLE})
# The filter's list of writers: a family archive has a few dozen; past this the rest are left out.
MAX_WRITERS = 1000

# A document's status in words (never colour alone) and the badge's look.
STATUS_LABELS: Mapping[DocumentStatus, str] = {
    DocumentStatus.NEW: N_("Not read yet"),
    DocumentStatus.QUEUED: N_("Waiting for OCR"),
    DocumentStatus.RUNNING: N_("OCR running"),
    DocumentStatus.DONE: N_("Read"),
    DocumentStatus.FAILED: N_("OCR failed"),
    DocumentStatus.PARTIAL: N_("Partly read"),
}
STATUS_BADGES: Mapping[DocumentStatus, str] = {
    DocumentStatus.NEW: "neutral",
    DocumentStatus.QUEUED: "info",
    DocumentStatus.RUNNING: "info",
    DocumentStatus.DONE: "success",
    DocumentStatus.FAILED: "danger",
    DocumentStatus.PARTIAL: "warning",
}


@dataclass(frozen=True)
class Segment:
    text: str
    marked: bool


def marked_segments(text: str, spans: list[tuple[int, int]]) -> list[Segment]:
    """The line's text cut into plain and highlighted pieces; spans that overlap, touch, run past
    the end or are empty are merged or dropped, so every character appears exactly once."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        start, end = max(start, 0), min(end, len(text))
        if start >= end:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    segments: list[Segment] = []
    position = 0
    for start, end in merged:
        if start > position:
            segments.append(Segment(text[position:start], False))
        segments.append(Segment(text[start:end], True))
        position = end
    if position < len(text):
        segments.append(Segment(text[position:], False))
    return segments


def document_date(value: date | None, precision: DatePrecision | None, language: str) -> str:
    """A letter's date as precise as it is known: "1923", "März 1923", "3. März 1923"."""
    if value is None:
        return ""
    if precision is DatePrecision.YEAR:
        return str(value.year)
    if precision is DatePrecision.MONTH:
        return format_skeleton("yMMMM", value, locale=language)
    return format_date(value, format="long", locale=language)


@dataclass(frozen=True)
class Filters:
    """What the person typed and chose, exactly as sent (kept in the form, even when not valid)."""

    q: str = ""
    writer: str = ""
    date_from: str = ""
    date_to: str = ""
    status: str = ""
    page: str = "1"

    def params(self) -> SearchParams:
        """The service's query; raises ValidationError for a value that is not valid."""
        values = {"q": self.q, "dateFrom": self.date_from, "dateTo": self.date_to, "writer": self.writer}
        given = {key: value for key, value in values.items() if value.strip() or key == "q"}
        if self.status:
            given["status"] = self.status
        return SearchParams.model_validate({**given, "page": self.page or "1", "pageSize": PAGE_SIZE})

    def link(self, page: int) -> str:
        """This search's address on another page of results."""
        values = {
            "q": self.q,
            "writer": self.writer,
            "dateFrom": self.date_from,
            "dateTo": self.date_to,
            "status": self.status,
        }
        query = {key: value for key, value in values.items() if value}
        if page > 1:
            query["page"] = str(page)
        return "/search?" + urlencode(query)

    @property
    def unfiltered_link(self) -> str:
        """The same words, every filter removed."""
        return "/search?" + urlencode({"q": self.q}) if self.q else "/search"

    @property
    def filtered(self) -> bool:
        return any((self.writer, self.date_from, self.date_to, self.status))


def _writers_then_close(writers: Writers, session: Session) -> list[WriterSummaryOut]:
    try:
        return all_writers(writers, session)
    finally:
        session.close()


def all_writers(writers: Writers, session: Session) -> list[WriterSummaryOut]:
    found: list[WriterSummaryOut] = []
    cursor: str | None = None
    while len(found) < MAX_WRITERS:
        page = writers.page(session, WriterFilter(cursor=cursor, limit=200))
        found.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    return found[:MAX_WRITERS]


def page_numbers(current: int, last: int) -> Iterator[int]:
    """The pages offered as links: the first, the last, and two on either side of this one."""
    shown = {1, last, *range(current - 2, current + 3)}
    yield from sorted(n for n in shown if 1 <= n <= last)


@router.get("/search")
async def search_page(
    page: UserPage,
    services: ServicesDep,
    session: SessionDep,
    q: str = "",
    writer: str = "",
    date_from: Annotated[str, Query(alias="dateFrom")] = "",
    date_to: Annotated[str, Query(alias="dateTo")] = "",
    status: str = "",
    page_number: Annotated[str, Query(alias="page")] = "1",
) -> Response:
    filters = Filters(q.strip(), writer, date_from, date_to, status, page_number)
    # The writers for the filter first; then the search waits for its turn (backend/search/
    # runner.py) holding neither a thread nor this request's connection, which goes back to the
    # pool (the page's user stays readable, detached).
    writers = await run_in_threadpool(_writers_then_close, services.writers, session)
    result: SearchOut | None = None
    problem: str | None = None
    http_status, http_headers = 200, {}
    if filters.q or filters.filtered:
        try:
            result = await services.searches.result(filters.params())
        except ValidationError:
            problem = page.renderer.error_message(page.language, ErrorCode.INVALID_REQUEST)
        except AppError as error:
            if error.code not in _SAID_ON_THE_PAGE:
                raise
            problem = page.renderer.error_message(page.language, error.code)
            # Too busy or unavailable: the page with its form as typed, the reason above it.
            if error.code is not ErrorCode.SEARCH_QUERY_INVALID:
                http_status, http_headers = 503, error.headers or {}
    last_page = max(1, math.ceil(result.total / PAGE_SIZE)) if result else 1
    title = page.gettext(N_("Search")) + (f": {filters.q}" if filters.q else "")
    response = await run_in_threadpool(
        page.render,
        "search.html",
        status=http_status,
        title=title,
        search_query=filters.q,
        filters=filters,
        result=result,
        problem=problem,
        last_page=last_page,
        page_numbers=list(page_numbers(result.page, last_page)) if result else [],
        writers=writers,
        statuses=[(s.value, page.gettext(label)) for s, label in STATUS_LABELS.items()],
        status_labels={s.value: page.gettext(label) for s, label in STATUS_LABELS.items()},
        status_badges={s.value: badge for s, badge in STATUS_BADGES.items()},
        marked_segments=marked_segments,
        document_date=lambda value, precision: document_date(value, precision, page.language),
    )
    response.headers.update(http_headers)
    return response
