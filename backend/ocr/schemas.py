"""The OCR jobs API's JSON (camelCase)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, StrictBool

from backend.ocr.models import JobStatus, ModelSource
from backend.schemas import ApiModel, DbId, OneLine


class OcrStartIn(ApiModel):
    # A model in the OCR service's store; None: its default model.
    model: OneLine | None = Field(None, min_length=1, max_length=100)
    # Drop the corrections of the pages read (archived with their history); admin or uploader.
    discard_corrections: StrictBool = False


class BatchIn(ApiModel):
    document_ids: list[DbId] = Field(min_length=1, max_length=1000)
    model: OneLine | None = Field(None, min_length=1, max_length=100)
    discard_corrections: StrictBool = False


class RetryIn(ApiModel):
    # Also re-queue the batch's CANCELLED jobs (by default only its FAILED ones).
    include_cancelled: StrictBool = False


class JobCreated(ApiModel):
    job_id: int


class BatchCreated(ApiModel):
    batch_id: int


class BatchRetried(ApiModel):
    batch_id: int
    requeued: list[int]


class BatchCancelled(ApiModel):
    batch_id: int
    cancelled: list[int]


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
    # The model the person picked (None: none), and the one the job reads with: decided when a
    # runner first takes it up (None until then), ``modelUsed`` None meaning the OCR service's
    # default. ``modelNote`` says why it reads with the default although another was decided.
    model_requested: str | None
    model_source: ModelSource | None
    model_used: str | None
    model_note: str | None
    discard_corrections: bool
    # Corrected lines this job has dropped so far (each archived with its history).
    corrections_discarded: int
    cancelled_by: int | None
    # Seconds until done at the pace observed; None until it can be estimated, and once ended.
    eta_seconds: int | None = None
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
    # Seconds until every job still queued or running is done; None while one cannot be estimated.
    eta_seconds: int | None
    jobs: list[JobOut]
