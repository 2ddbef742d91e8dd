"""The training API's JSON (camelCase)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from backend.ocr_client import BreakerState
from backend.schemas import ApiModel, OneLine
from backend.training.models import RunStatus, TrainingKind


class StartIn(ApiModel):
    # The writer's slug; only (and always) for a writer run.
    writer: OneLine | None = Field(None, min_length=1, max_length=200)


class WriterRef(ApiModel):
    slug: str
    name: str


class ModelRef(ApiModel):
    name: str
    run_id: int | None


class EpochOut(ApiModel):
    epoch: int
    accuracy: float | None
    cer: float | None


class RunOut(ApiModel):
    id: int
    kind: TrainingKind
    writer: WriterRef | None
    status: RunStatus
    ocr_job_id: str | None
    sequence: int
    base_model: str | None
    model_name: str
    model_version: str | None
    line_count: int
    page_count: int
    heldout_line_count: int
    heldout_page_count: int
    epoch: int | None
    metrics: list[EpochOut]
    accuracy: float | None
    cer: float | None
    info: list[str]
    heldout_cer: float | None
    replaced_model: str | None
    replaced_cer: float | None
    adopted: bool
    adopted_at: datetime | None
    adopted_by: int | None
    adoption_note: str | None
    error_code: str | None
    error_message: str | None
    # An admin asked to cancel; the run ends CANCELLED once the OCR service confirms.
    cancel_requested: bool
    cancelled_by: int | None
    created_by: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RunPage(ApiModel):
    runs: list[RunOut]
    # Pass as ``before`` for the next (older) page; None: there is none.
    next_before: int | None


class KindOut(ApiModel):
    kind: TrainingKind
    # Ground-truth lines (segmentation: lines of reviewed pages) and their pages, all of them.
    eligible_lines: int
    eligible_pages: int
    threshold: int
    threshold_unit: Literal["lines", "pages"]
    can_start: bool
    # Why a run may not start now, in plain language; None when it may.
    reason: str | None
    # The same as the refusal's error code and details (what ``POST`` would answer), so a
    # page can say it in the reader's language.
    reason_code: str | None
    reason_details: dict[str, int | str] | None


class WriterKindOut(KindOut):
    writer: WriterRef
    model: ModelRef | None
    new_lines_since_last_run: int
    suggested: bool


class OcrServiceOut(ApiModel):
    healthy: bool
    breaker: BreakerState
    since: datetime | None
    message: str | None


class OverviewOut(ApiModel):
    training_enabled: bool
    kinds: list[KindOut]
    writers: list[WriterKindOut]
    runs: list[RunOut]
    ocr_service: OcrServiceOut
