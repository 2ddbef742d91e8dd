"""JSON of the writers routes."""

from __future__ import annotations

from pydantic import Field

from backend.schemas import ApiModel

# The shape of every slug the backend makes (backend/documents/service.py: slugify).
SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,199}$"


class WriterFilter(ApiModel):
    cursor: str | None = Field(None, pattern=SLUG_PATTERN, description="nextCursor of the previous page")
    limit: int = Field(50, ge=1, le=200)


class WriterModelOut(ApiModel):
    """The writer's own recognition model (a writer run made it, adoption chose it)."""

    name: str
    run_id: int | None
    # The run's number among the writer's runs (the "v3"), and the model in words.
    run_sequence: int | None
    label: str


class WriterSummaryOut(ApiModel):
    id: int
    slug: str
    name: str
    # Their documents not in the trash.
    document_count: int
    # None: their documents are read with the OCR service's default model.
    model: WriterModelOut | None


class WriterPage(ApiModel):
    items: list[WriterSummaryOut]
    next_cursor: str | None
