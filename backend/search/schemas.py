"""The search route's query and answer (camelCase on the wire)."""

from __future__ import annotations

from datetime import date

from pydantic import Field

from backend.documents.models import DatePrecision, DocumentStatus
from backend.schemas import ApiModel, OneLine

MAX_PAGE_SIZE = 50


class SearchParams(ApiModel):
    # Longer queries are refused by the parser with SEARCH_QUERY_INVALID (not the generic 422);
    # this bound only keeps a huge query string from being read at all.
    q: str = Field(max_length=10_000, description='words, "a phrase", -excluded')
    writer: OneLine | None = Field(None, max_length=200, description="the writer's slug")
    date_from: date | None = None
    date_to: date | None = None
    status: DocumentStatus | None = None
    page: int = Field(1, ge=1, le=10_000)
    page_size: int = Field(20, ge=1, le=MAX_PAGE_SIZE)


class SearchWriterOut(ApiModel):
    slug: str
    name: str


class SearchDocumentOut(ApiModel):
    id: int
    title: str
    writer: SearchWriterOut | None
    date: date | None
    date_precision: DatePrecision | None
    status: DocumentStatus


class SearchHitOut(ApiModel):
    line_id: int
    page_number: int
    order_index: int
    text: str = Field(description="the line's current text: a person's correction, else the OCR's")
    corrected: bool
    exact: bool = Field(description="every word matched as typed (folded), none by a near spelling")
    highlights: list[tuple[int, int]] = Field(description="[start, end) character offsets into text")
    link: str


class SearchResultOut(ApiModel):
    document: SearchDocumentOut
    hit_count: int
    hits: list[SearchHitOut]


class SearchOut(ApiModel):
    query: str
    total: int = Field(description="documents matched")
    page: int
    page_size: int
    # The candidate lines were cut at APP_SEARCH_CANDIDATE_LINES (a very common word): the best
    # ones are shown and counted, others may exist.
    capped: bool
    results: list[SearchResultOut]
