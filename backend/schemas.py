"""Shared pieces of the API's JSON: camelCase models and text that the database can store."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Control characters (NUL above all: PostgreSQL refuses it in text) and lone surrogates
# (no database encoding can store them) are refused in every text a person sends.
_UNSTORABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def storable(value: str) -> str:
    """``value`` without what :data:`StorableText` refuses: for text read from files (an import),
    where a stray control character is no reason to refuse a whole archive."""
    return _UNSTORABLE.sub("", value)


def _storable(value: str) -> str:
    if _UNSTORABLE.search(value):
        raise ValueError("must not contain control characters")
    return value


def _single_line(value: str) -> str:
    value = _storable(value).strip()
    if "\n" in value or "\r" in value or "\t" in value:
        raise ValueError("must be a single line")
    return value


# Text of a line or a note: tabs and line breaks allowed.
StorableText = Annotated[str, AfterValidator(_storable)]
# A title, a name, a filter: one line, trimmed.
OneLine = Annotated[str, AfterValidator(_single_line)]
# Database ids: INTEGER on both databases; anything larger would be a database error, not a 404.
MAX_DB_ID = 2**31 - 1
DbId = Annotated[int, Field(ge=1, le=MAX_DB_ID)]


class ApiModel(BaseModel):
    """JSON in camelCase (DESIGN.md); unknown fields are refused rather than silently dropped."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", from_attributes=True)


def _row_id(value: str | None) -> str | None:
    # Ten digits pass the pattern but may exceed INTEGER: PostgreSQL fails the comparison (a 500).
    if value is not None and int(value) > MAX_DB_ID:
        raise ValueError("is not a cursor of this list")
    return value


class Keyset(ApiModel):
    """A page of a list paged on its rows' ids: ``limit`` rows after ``cursor`` (a previous ``nextCursor``)."""

    cursor: Annotated[str | None, AfterValidator(_row_id)] = Field(
        None, pattern=r"^[1-9][0-9]{0,9}$", description="nextCursor of the previous page"
    )
    limit: int = Field(50, ge=1, le=200)
