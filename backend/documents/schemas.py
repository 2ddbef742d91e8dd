"""JSON of the document and line routes."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from backend.documents.models import DatePrecision, DocumentStatus
from backend.schemas import ApiModel, Keyset, OneLine, StorableText

_PARTIAL_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def parse_partial_date(value: str) -> tuple[date, DatePrecision]:
    """``1916``, ``1916-05`` or ``1916-05-03`` → the first day of that span and its precision."""
    match = _PARTIAL_DATE.fullmatch(value)
    if match is None:
        raise ValueError("must be a date like 1916, 1916-05 or 1916-05-03")
    year, month, day = match.groups()
    try:
        first = date(int(year), int(month or 1), int(day or 1))
    except ValueError as exc:
        raise ValueError("is not a date that exists") from exc
    precision = DatePrecision.DAY if day else DatePrecision.MONTH if month else DatePrecision.YEAR
    return first, precision


def format_partial_date(value: date | None, precision: DatePrecision | None) -> str | None:
    if value is None:
        return None
    if precision is DatePrecision.YEAR:
        return f"{value.year:04d}"
    if precision is DatePrecision.MONTH:
        return f"{value.year:04d}-{value.month:02d}"
    return value.isoformat()


def _partial_date(value: str) -> str:
    parse_partial_date(value)
    return value


PartialDate = Annotated[str, AfterValidator(_partial_date)]

# The most characters one line's text may hold (a correction; an imported line).
MAX_LINE_TEXT = 5000


class UploadFields(ApiModel):
    """The text fields of an upload (the file itself is checked by its bytes)."""

    title: OneLine = Field(min_length=1, max_length=500)
    writer: OneLine | None = Field(None, max_length=200)
    date: PartialDate | None = None


class WriterOut(ApiModel):
    id: int
    name: str
    slug: str


class ModelOut(ApiModel):
    """The model that read a page or line: its name and version as the OCR service named them;
    the writer whose model it is and the run's number where a training run made it (a writer
    run: ``writer`` set; a recognition run, the archive's own model: ``writer`` null)."""

    name: str
    version: str | None
    writer: WriterOut | None
    run_sequence: int | None


class DocumentOut(ApiModel):
    id: int
    title: str
    writer: WriterOut | None
    date: str | None
    original_filename: str | None
    media_type: str
    sha256: str
    size_bytes: int
    page_count: int
    status: DocumentStatus
    created_by: int
    created_at: datetime
    deleted_at: datetime | None = None


class TrashedDocumentOut(DocumentOut):
    # After this moment the document is deleted for good.
    purge_at: datetime


class DocumentFilter(Keyset):
    writer: OneLine | None = Field(None, max_length=200, description="the writer's slug")
    status: DocumentStatus | None = None
    date_from: date | None = None
    date_to: date | None = None
    title: OneLine | None = Field(None, max_length=500, description="part of the title, any case")


class DocumentPage(ApiModel):
    items: list[DocumentOut]
    next_cursor: str | None


class PageOut(ApiModel):
    number: int
    # The page in the OCR's pixels: its lines' baselines and polygons are in this space. Lay the
    # image (any size, same proportions) into a box of width × height to draw the lines over it.
    width: int | None
    height: int | None
    image_url: str
    thumbnail_url: str
    # The model that read the page and when; ``modelLabel`` says it in words ("Anna Müller's
    # model (v3)", "Archive model (v2)", else the model's name). None while it is unread.
    model: ModelOut | None = None
    model_label: str | None = None
    ocr_at: datetime | None = None
    # A person checked every line of the page (positions and text): ground truth for training.
    reviewed: bool
    reviewed_at: datetime | None
    reviewed_by: int | None


class LineOut(ApiModel):
    id: int
    page: int
    order_index: int
    baseline: list[Any]
    polygon: list[Any]
    ocr_text: str
    ocr_confidence: float | None
    text: str | None
    # What the archive holds for the line: the person's text where there is one, else the OCR's.
    current_text: str
    corrected_by: int | None
    corrected_at: datetime | None
    model_name: str | None
    model_version: str | None
    # The model that read the line (its name and version are modelName/modelVersion) and in words.
    model: ModelOut | None
    model_label: str | None
    version: int


class LineCorrectionIn(ApiModel):
    text: StorableText = Field(max_length=MAX_LINE_TEXT)
    version: int = Field(ge=1, le=2**31 - 1)


class CorrectionOut(ApiModel):
    user_id: int
    corrected_at: datetime
    text_before: str
    text_after: str
    version: int


class DiscardedCorrectionOut(ApiModel):
    """A person's text dropped by an OCR re-run asked to discard corrections, with its history then."""

    id: int
    page: int
    order_index: int
    # The line's id then; the line itself is gone where the new reading had no line there.
    line_id: int
    ocr_text: str
    text: str
    corrected_by: int | None
    corrected_at: datetime | None
    version: int
    history: list[CorrectionOut]
    discarded_by: int
    discarded_at: datetime
    job_id: int | None


class DiscardedCorrectionPage(ApiModel):
    items: list[DiscardedCorrectionOut]
    next_cursor: str | None
