"""What an export request names: the format, and for a selection the documents."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from backend.schemas import ApiModel


class ExportFormat(StrEnum):
    TXT = "txt"
    PAGE = "page"
    ALTO = "alto"


DocumentIdValue = Annotated[int, Field(ge=1, le=2**31 - 1)]


class SelectionQuery(ApiModel):
    """``?ids=1&ids=2&format=page``; the same id twice is exported once."""

    ids: list[DocumentIdValue] = Field(min_length=1)
    format: ExportFormat
