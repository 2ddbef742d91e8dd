"""Writers, documents, their pages and lines, and the history of every correction.

The OCR's reading of a line (``ocr_text``) and a person's correction (``text``) are kept
apart: a new OCR run never overwrites a correction, and the pair measures how often a
model is wrong. OCR jobs (a later migration) write pages and lines page by page.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Enum, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.db import Base, JsonType, UtcDateTime


class DocumentStatus(StrEnum):
    NEW = "NEW"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    # OCR was cancelled after some pages were read: those pages keep their lines.
    PARTIAL = "PARTIAL"


class DatePrecision(StrEnum):
    YEAR = "year"
    MONTH = "month"
    DAY = "day"


def _values(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]


class Writer(Base):
    """A person who wrote letters. The slug is made once from the first spelling and never changes."""

    __tablename__ = "writers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # The writer's own recognition model in the OCR service's store (a writer run adopted it),
    # used for this writer's documents when nobody picks another; None: the default model.
    model_name: Mapped[str | None] = mapped_column(String(100))
    # The training run that made it (a plain number: no cycle between the two tables).
    model_run_id: Mapped[int | None] = mapped_column(Integer)


# A title's characters (the column's length).
TITLE_LENGTH = 500


def folded_title(title: str) -> str:
    """``title`` casefolded for the title filter, cut to the column: casefolding lengthens some
    characters (ß, ﬁ: two; ΐ: three), and PostgreSQL refuses a value longer than its column."""
    return title.casefold()[:TITLE_LENGTH]


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(TITLE_LENGTH))
    # casefold()ed title for the title filter: SQLite's lower() knows only ASCII ("Überweisung").
    title_folded: Mapped[str] = mapped_column(String(TITLE_LENGTH))
    writer_id: Mapped[int | None] = mapped_column(ForeignKey("writers.id", ondelete="RESTRICT"), index=True)
    # Letters are often dated to the year or month only: the first day of that span, and its precision.
    date: Mapped[date | None] = mapped_column(index=True)
    date_precision: Mapped[DatePrecision | None] = mapped_column(
        Enum(DatePrecision, native_enum=False, length=8, values_callable=_values)
    )
    original_filename: Mapped[str | None] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(32))
    storage_key: Mapped[str] = mapped_column(String(100), unique=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    page_count: Mapped[int] = mapped_column(Integer)
    status: Mapped[DocumentStatus] = mapped_column(
        Enum(DocumentStatus, native_enum=False, length=16, values_callable=_values), index=True
    )
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # In the trash since then (restorable for APP_TRASH_DAYS); None: not deleted.
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), index=True)
    deleted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))

    writer: Mapped[Writer | None] = relationship(lazy="joined")


class Page(Base):
    __tablename__ = "pages"
    __table_args__ = (
        UniqueConstraint("document_id", "number"),
        # Training data: the reviewed pages, found without reading every page (partial: few are).
        Index(
            "ix_pages_reviewed_at",
            "reviewed_at",
            sqlite_where=sql_text("reviewed_at IS NOT NULL"),
            postgresql_where=sql_text("reviewed_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)  # 1-based
    # Size in the upright page's pixels as the OCR service reads it (its lines' coordinates are
    # in these pixels); None until the page list or a page image first needs it.
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    # The page rendered for people (display size and thumbnail, WebP), in storage under pages/;
    # None until first asked for. Both are set together, once.
    image_key: Mapped[str | None] = mapped_column(String(100))
    thumbnail_key: Mapped[str | None] = mapped_column(String(100))
    # The model that read this page's lines (set when its lines are stored).
    ocr_model: Mapped[str | None] = mapped_column(String(100))
    ocr_model_version: Mapped[str | None] = mapped_column(String(100))
    ocr_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # A person checked every line of this page (positions and text): its lines' current text is
    # ground truth for recognition training, and the page trains segmentation. None: not yet.
    reviewed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    reviewed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))


class Line(Base):
    __tablename__ = "lines"
    __table_args__ = (
        UniqueConstraint("page_id", "order_index"),
        # Training data: the corrected lines, found without a scan of every line (wide rows with
        # their outlines); partial, so uncorrected lines cost it nothing.
        Index(
            "ix_lines_corrected_page_id",
            "page_id",
            sqlite_where=sql_text("text IS NOT NULL"),
            postgresql_where=sql_text("text IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    page_id: Mapped[int] = mapped_column(ForeignKey("pages.id", ondelete="CASCADE"), index=True)
    order_index: Mapped[int] = mapped_column(Integer)  # reading order on the page, from 0
    baseline: Mapped[list[Any]] = mapped_column(JsonType)
    polygon: Mapped[list[Any]] = mapped_column(JsonType)
    ocr_text: Mapped[str] = mapped_column(Text)
    ocr_confidence: Mapped[float | None] = mapped_column(Float)
    # A person's reading; None while nobody has corrected the line.
    text: Mapped[str | None] = mapped_column(Text)
    corrected_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    corrected_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    model_name: Mapped[str | None] = mapped_column(String(100))
    model_version: Mapped[str | None] = mapped_column(String(100))
    # Raised by every correction; a save naming an older version is refused (409 LINE_CHANGED).
    version: Mapped[int] = mapped_column(Integer, default=1)


class LineCorrection(Base):
    """One saved correction: who, when, the line's text before and after."""

    __tablename__ = "line_corrections"

    id: Mapped[int] = mapped_column(primary_key=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    corrected_at: Mapped[datetime] = mapped_column(UtcDateTime())
    text_before: Mapped[str] = mapped_column(Text)
    text_after: Mapped[str] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer)  # the line's version this correction created


class DiscardedCorrection(Base):
    """A person's correction dropped by an OCR re-run the person asked to discard corrections on.

    Nothing a person typed is lost silently: the line's text, who corrected it and its whole
    correction history (``history``: the ``line_corrections`` rows, copied) are kept here,
    also when the line itself is gone (the new reading has no line at its position).
    """

    __tablename__ = "discarded_corrections"

    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    page_number: Mapped[int] = mapped_column(Integer)
    order_index: Mapped[int] = mapped_column(Integer)
    # The line's id then (a line at a position the new reading has keeps it).
    line_id: Mapped[int] = mapped_column(Integer)
    ocr_text: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    corrected_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    corrected_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    version: Mapped[int] = mapped_column(Integer)
    history: Mapped[list[Any]] = mapped_column(JsonType)
    discarded_by: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    discarded_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # The OCR job that discarded it (a plain number: the job may be purged, the record stays).
    job_id: Mapped[int | None] = mapped_column(Integer)
