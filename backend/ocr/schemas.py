"""The OCR jobs API's JSON (camelCase)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from backend.ocr.models import JobStatus
from backend.schemas import ApiModel, DbId, OneLine


class OcrStartIn(ApiModel):
    # A model in the OCR service's store; None: its default model.
    model: OneLine | None = Field(None, min_length=1, max_length=100)


class BatchIn(ApiModel):
    document_ids: list[DbId] = Field(min_length=1, max_length=1000)
    model: OneLine | None = Field(None, min_length=1, max_length=100)


class JobCreated(ApiModel):
    job_id: int


class BatchCreated(ApiModel):
    batch_id: int


class BatchRetried(ApiModel):
    batch_id: int
    requeued: list[int]


class JobOut(ApiModel):
    id: int
    document_id: int
    batch_id: int | None
    status: JobStatus
    pages_done: int
    pages_total: int
    error_code: str | None
    error_message: str | None
    attempts: int
    model_requested: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class BatchOut(ApiModel):
    id: int
    created_at: datetime
    pages_done: int
    pages_total: int
    # How many of its documents are in each status (every status named, zeros too).
    counts: dict[JobStatus, int]
    jobs: list[JobOut]
