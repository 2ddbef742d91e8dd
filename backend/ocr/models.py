"""OCR jobs and batches: one job per document run, persisted so it survives restarts and crashes.

A job is claimed by a runner for a lease (owner + expiry) that the live runner renews; a job
whose lease expired is taken up again by any runner and resumes after ``pages_done`` (pages
are stored in order, each in one transaction with the counter, so the counter never lies).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, Enum, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, UtcDateTime


class JobStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class ModelSource(StrEnum):
    """Why a job reads with the model it does."""

    # The person who started the job picked it: it always wins, and is never swapped for another.
    REQUESTED = "requested"
    # Nobody picked one and the document's writer has a model of their own (a writer run made it).
    WRITER = "writer"
    # Nobody picked one and the writer has none: the OCR service's default model.
    DEFAULT = "default"


# Recorded per page when the page event names no model: the service's default model at the time.
DEFAULT_MODEL = "default"

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
FINISHED = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


def _values(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]


class OcrBatch(Base):
    __tablename__ = "ocr_batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class OcrJob(Base):
    __tablename__ = "ocr_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("ocr_batches.id", ondelete="CASCADE"), index=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, native_enum=False, length=16, values_callable=_values), index=True
    )
    # The model the person asked for; None: the OCR service's default.
    model_requested: Mapped[str | None] = mapped_column(String(100))
    # Decided when the job is first claimed (so a writer's model adopted while the job waited is
    # used) and kept when it resumes: the pages of one document are read by one model. None
    # until then. ``model_used`` is the name sent to the OCR service; None: none sent (its default).
    model_source: Mapped[ModelSource | None] = mapped_column(
        Enum(ModelSource, native_enum=False, length=16, values_callable=_values)
    )
    model_used: Mapped[str | None] = mapped_column(String(100))
    # Why the job reads with another model than the one decided (that model is gone from the OCR service).
    model_note: Mapped[str | None] = mapped_column(Text)
    pages_done: Mapped[int] = mapped_column(Integer, default=0)
    pages_total: Mapped[int] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    # How often a runner has taken the job up (a resumed job counts again).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # pages_done when the current run was claimed: the pace of this run (the time estimate)
    # counts only the pages it stored itself since started_at.
    pages_at_claim: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The person asked to drop the corrections of the pages this job reads (admin or the
    # document's uploader); how many corrected lines it has dropped so far (each is archived
    # in discarded_corrections with its whole history).
    discard_corrections: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    corrections_discarded: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cancelled_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), index=True)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
