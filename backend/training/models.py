"""Training runs: one row per run the backend asked the OCR service for, followed to its end.

A run is a persisted job like an OCR job: the OCR service trains while the backend restarts,
and the backend re-attaches at start-up to every run it left RUNNING (``ocr_job_id``). The
follower holds a lease (owner + expiry) that it renews, so with several backend processes
exactly one follows each run, and a dead follower's run is taken over.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, Enum, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, JsonType, UtcDateTime


class TrainingKind(StrEnum):
    RECOGNITION = "recognition"
    SEGMENTATION = "segmentation"
    WRITER = "writer"


class RunStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


ACTIVE_RUN = (RunStatus.QUEUED, RunStatus.RUNNING)
FINISHED_RUN = (RunStatus.DONE, RunStatus.FAILED, RunStatus.CANCELLED)


def _values(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]


class TrainingRun(Base):
    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[TrainingKind] = mapped_column(
        Enum(TrainingKind, native_enum=False, length=16, values_callable=_values), index=True
    )
    # The writer of a writer run; None for the other kinds.
    writer_id: Mapped[int | None] = mapped_column(ForeignKey("writers.id", ondelete="RESTRICT"), index=True)
    status: Mapped[RunStatus] = mapped_column(
        Enum(RunStatus, native_enum=False, length=16, values_callable=_values), index=True
    )
    # True while the run is QUEUED or RUNNING, NULL after: a unique index on it lets only one
    # run be active at a time, also when two backend processes start one in the same instant.
    active: Mapped[bool | None] = mapped_column(Boolean, unique=True)
    # The OCR service's job id, once it accepted the ZIP.
    ocr_job_id: Mapped[str | None] = mapped_column(String(100))
    # The n-th run of its kind (and writer): the model is stored as ``<name>-v<n>``.
    sequence: Mapped[int] = mapped_column(Integer)
    # The model the run starts from (None: a new network), and the model it is stored as.
    base_model: Mapped[str | None] = mapped_column(String(100))
    model_name: Mapped[str] = mapped_column(String(100))
    # The OCR service's version of the installed model (from /models), once DONE.
    model_version: Mapped[str | None] = mapped_column(String(100))
    # What went into the ZIP, and what was held out to judge the new model against the old.
    line_count: Mapped[int] = mapped_column(Integer, default=0)
    page_count: Mapped[int] = mapped_column(Integer, default=0)
    heldout_line_count: Mapped[int] = mapped_column(Integer, default=0)
    heldout_page_ids: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    # Progress as the OCR service reports it: the epoch, every epoch's accuracy and CER
    # ([{"epoch","accuracy","cer"}]; segmentation's CER is 1 − accuracy), the best of them,
    # and the service's notes (e.g. "a new model at 800 px").
    epoch: Mapped[int | None] = mapped_column(Integer)
    metrics: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    accuracy: Mapped[float | None] = mapped_column(Float)
    cer: Mapped[float | None] = mapped_column(Float)
    info: Mapped[list[Any]] = mapped_column(JsonType, default=list)
    # The held-out pages read with the new model and with the model it would replace.
    heldout_cer: Mapped[float | None] = mapped_column(Float)
    replaced_model: Mapped[str | None] = mapped_column(String(100))
    replaced_cer: Mapped[float | None] = mapped_column(Float)
    # Adopted: the default model (recognition), the writer's model (writer), or — only by an
    # admin's hand — the segmentation model. Why not, when it was not.
    adopted: Mapped[bool] = mapped_column(Boolean, default=False)
    adopted_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    adopted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    adoption_note: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    cancelled_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), index=True)
    # When the OCR service last answered about the job (or the run was submitted): a run it
    # has not answered about for APP_TRAINING_LOST_AFTER_S ends FAILED, also across restarts.
    answered_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
