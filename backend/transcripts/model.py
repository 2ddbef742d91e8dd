"""A transcription as it travels between this archive and PAGE XML / ALTO files.

Coordinates are integer pixels of the page image the lines were read on (the upright page,
``Page.width`` x ``Page.height`` in the database). The archive keeps no regions: an export
writes one text region per page holding every line; an import flattens the file's regions
into one reading order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from backend.documents.models import DatePrecision

Point = tuple[int, int]


@dataclass(frozen=True)
class TranscriptLine:
    baseline: tuple[Point, ...]
    polygon: tuple[Point, ...]
    # The current text: a person's correction where there is one, else the OCR's ('' if none).
    text: str
    # The OCR's reading where a person changed it (exported as an alternative); None otherwise.
    ocr_text: str | None = None
    # The confidence of the OCR's reading (0-1), where known.
    confidence: float | None = None


@dataclass(frozen=True)
class TranscriptPage:
    number: int  # 1-based, in the document
    width: int
    height: int
    # The page image's file name as the ZIP holds it (export) or as the XML names it (import).
    image_name: str
    lines: tuple[TranscriptLine, ...] = ()


@dataclass(frozen=True)
class TranscriptDocument:
    title: str
    writer: str | None = None
    date: date | None = None
    date_precision: DatePrecision | None = None
    pages: tuple[TranscriptPage, ...] = field(default_factory=tuple)
