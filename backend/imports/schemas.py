"""The import's form fields and its answer."""

from __future__ import annotations

from pydantic import Field

from backend.documents.schemas import DocumentOut, PartialDate
from backend.schemas import ApiModel, OneLine


class ImportFields(ApiModel):
    """Optional: a title (only for a ZIP of one document), a writer and a date (for every document)."""

    title: OneLine | None = Field(None, min_length=1, max_length=500)
    writer: OneLine | None = Field(None, max_length=200)
    date: PartialDate | None = None


class ImportOut(ApiModel):
    documents: list[DocumentOut]
