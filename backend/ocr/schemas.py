"""The OCR jobs API's JSON (camelCase)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, StrictBool

from backend.documents.schemas import WriterOut
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


class OcrModelOut(ApiModel):
    """A recognition model the OCR service can read with, as the panel offers it."""

    name: str
    # The OCR service reads with it when a start names no model (and the writer has none).
    default: bool
    # Made by a training run of this archive: the run's number and, for a writer's run, the
    # writer (a recognition run's model, the archive's own, has ``runSequence`` and no writer).
    writer: WriterOut | None
    run_sequence: int | None


class OcrModelsOut(ApiModel):
    models: list[OcrModelOut]
    default: str | None
    # The model offered first for the document asked about: its writer's own model where the
    # service has it, else the default (None: no document asked about, or the service has none).
    preselected: str | None
    preselected_source: ModelSource | None


class DocumentOcrOut(ApiModel):
    """The document's latest OCR job (None: never read) and how many of its lines a person
    corrected (what ``discardCorrections`` would archive)."""

    job: JobOut | None
    corrected_lines: int
