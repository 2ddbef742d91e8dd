"""The job queue in the database, as the runner sees it: claim, renew, store a page, finish.

Every change to a running job is guarded by its lease (``lease_owner``): a runner that lost
its lease (it stalled past the expiry and another runner took the job up) changes nothing
and stops. Each call is one short transaction; none is open while the OCR service works.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, and_, or_, select, update
from sqlalchemy.orm import Session

from backend.db import Database, skip_locked
from backend.documents.lines import Lines
from backend.documents.models import Document, DocumentStatus, Page
from backend.metrics import Metrics
from backend.ocr.models import DEFAULT_MODEL, JobStatus, ModelSource, OcrJob
from backend.ocr.service import settle_documents


class LeaseLost(Exception):  # noqa: N818 - a state, not a failure of this runner's making
    """Another runner holds the job now (this one's lease expired): stop without touching it."""


@dataclass(frozen=True)
class Claimed:
    job_id: int
    document_id: int
    storage_key: str
    pages_done: int
    pages_total: int
    attempts: int
    # The model name sent to the OCR service (None: none, its default), and why it is that one.
    model: str | None
    # Who asked to discard the corrections of the pages this job reads; None: keep them.
    discard_by: int | None = None
    model_source: ModelSource = ModelSource.DEFAULT


_DOCUMENT_STATUS = {
    JobStatus.QUEUED: DocumentStatus.QUEUED,
    JobStatus.RUNNING: DocumentStatus.RUNNING,
    JobStatus.DONE: DocumentStatus.DONE,
    JobStatus.FAILED: DocumentStatus.FAILED,
    JobStatus.CANCELLED: DocumentStatus.NEW,
}


def _model_for(session: Session, job: OcrJob, document: Document) -> tuple[ModelSource, str | None, str | None]:
    """The model the job reads with from this claim on: its source, the name to send (None: the
    default), and the note on it.

    Decided when the job is claimed, not when it is started: a writer's model adopted while the
    job waited in the queue is used, also by a job taken up again before it stored a page. The
    person's pick wins; else the writer's model; else the default. Once a page is stored the
    job keeps its model, and one that reads with the default goes on with the model its last
    stored page was read with (the service named it): the pages of one document are not read
    by two models because another model was adopted meanwhile.
    """
    if job.pages_done == 0:
        if job.model_requested is not None:
            return ModelSource.REQUESTED, job.model_requested, None
        writer_model = document.writer.model_name if document.writer is not None else None
        if writer_model is not None:
            return ModelSource.WRITER, writer_model, None
        return ModelSource.DEFAULT, None, None
    source, used, note = job.model_source, job.model_used, job.model_note
    if source is None:
        # Pages stored before the backend recorded a job's model: what the person asked for.
        source = ModelSource.REQUESTED if job.model_requested is not None else ModelSource.DEFAULT
        used = job.model_requested
    if used is None:
        read_with = session.scalar(
            select(Page.ocr_model).where(Page.document_id == job.document_id, Page.number == job.pages_done)
        )
        used = read_with if read_with not in (None, DEFAULT_MODEL) else None
    return source, used, note


def _changed(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


class JobQueue:
    def __init__(
        self, db: Database, lines: Lines, owner: str, lease: timedelta, *, metrics: Metrics | None = None
    ) -> None:
        self.db = db
        self.lines = lines
        self.owner = owner
        self.lease = lease
        self.metrics = metrics

    def claim(self, limit: int, now: datetime) -> list[Claimed]:
        """Take up to ``limit`` jobs: queued ones, and running ones whose lease expired."""
        claimed: list[Claimed] = []
        with self.db.sessions() as session:
            takeable = or_(
                OcrJob.status == JobStatus.QUEUED,
                and_(OcrJob.status == JobStatus.RUNNING, OcrJob.lease_expires_at < now),
            )
            candidates = session.scalars(skip_locked(select(OcrJob).where(takeable).order_by(OcrJob.id).limit(limit)))
            for job in list(candidates):
                document = session.get_one(Document, job.document_id)
                if document.deleted_at is not None:
                    self._drop_trashed(session, job, document, takeable, now)
                    continue
                source, model, note = _model_for(session, job, document)
                # The guard repeats the condition: on SQLite (no row locks) two runners may
                # have read the same row, and only the first UPDATE finds it still takeable.
                taken = session.execute(
                    update(OcrJob)
                    .where(OcrJob.id == job.id, takeable)
                    .values(
                        status=JobStatus.RUNNING,
                        lease_owner=self.owner,
                        lease_expires_at=now + self.lease,
                        attempts=OcrJob.attempts + 1,
                        started_at=now,
                        pages_at_claim=OcrJob.pages_done,
                        model_source=source,
                        model_used=model,
                        model_note=note,
                    )
                    .execution_options(synchronize_session=False)
                )
                if _changed(taken) != 1:
                    continue
                session.refresh(job)
                document.status = DocumentStatus.RUNNING
                claimed.append(
                    Claimed(
                        job.id,
                        job.document_id,
                        document.storage_key,
                        job.pages_done,
                        job.pages_total,
                        job.attempts,
                        model,
                        job.created_by if job.discard_corrections else None,
                        source,
                    )
                )
            session.commit()
        return claimed

    def fall_back(self, job_id: int, note: str, now: datetime) -> None:
        """The job reads on with the OCR service's default model; ``note`` says why (on the job)."""
        with self.db.sessions() as session:
            self._guard(session, job_id, now, model_used=None, model_note=note)
            session.commit()

    def _drop_trashed(
        self, session: Session, job: OcrJob, document: Document, takeable: ColumnElement[bool], now: datetime
    ) -> None:
        """Cancel a job whose document is in the trash instead of reading it.

        Moving a document to the trash cancels its job; this catches the job of a start that
        raced the trash (on SQLite the start reads the document before the trash commits)."""
        dropped = session.execute(
            update(OcrJob)
            .where(OcrJob.id == job.id, takeable)
            .values(
                status=JobStatus.CANCELLED,
                cancelled_by=document.deleted_by,
                finished_at=now,
                lease_owner=None,
                lease_expires_at=None,
            )
            .execution_options(synchronize_session=False)
        )
        if _changed(dropped) == 1:
            settle_documents(session, [document.id])

    def _guard(self, session: Session, job_id: int, now: datetime, **values: Any) -> None:
        result = session.execute(
            update(OcrJob)
            .where(OcrJob.id == job_id, OcrJob.lease_owner == self.owner, OcrJob.status == JobStatus.RUNNING)
            .values(lease_expires_at=now + self.lease, **values)
            .execution_options(synchronize_session=False)
        )
        if _changed(result) != 1:
            session.rollback()
            raise LeaseLost(f"OCR job {job_id} is no longer held by {self.owner}")

    def holds(self, job_id: int) -> bool:
        """Whether this runner still holds the job: False once it was cancelled or another runner took it."""
        with self.db.sessions() as session:
            row = session.execute(select(OcrJob.status, OcrJob.lease_owner).where(OcrJob.id == job_id)).first()
        return row is not None and row.status is JobStatus.RUNNING and row.lease_owner == self.owner

    def renew(self, job_id: int, now: datetime) -> None:
        with self.db.sessions() as session:
            self._guard(session, job_id, now)
            session.commit()

    def store_page(
        self,
        job: Claimed,
        page: int,
        lines: Sequence[dict[str, Any]],
        *,
        model: str,
        model_version: str | None,
        now: datetime,
        size: tuple[int, int] | None = None,
    ) -> None:
        """The page's lines and the job's progress in one transaction: never one without the other."""
        with self.db.sessions() as session:
            self._guard(session, job.job_id, now, pages_done=page)
            discarded = self.lines.replace_page(
                session,
                job.document_id,
                page,
                lines,
                model=model,
                model_version=model_version,
                now=now,
                size=size,
                discard_by=job.discard_by,
                job_id=job.job_id,
            )
            if discarded:
                session.execute(
                    update(OcrJob)
                    .where(OcrJob.id == job.job_id)
                    .values(corrections_discarded=OcrJob.corrections_discarded + discarded)
                )
            session.commit()
        if self.metrics is not None:
            self.metrics.ocr_pages.inc()

    def finish(self, job_id: int, status: JobStatus, now: datetime, code: str | None = None, message: str = "") -> None:
        """End the job (DONE/FAILED) or give it back to the queue (QUEUED), lease released."""
        with self.db.sessions() as session:
            self._guard(
                session,
                job_id,
                now,
                status=status,
                error_code=code,
                error_message=message or None,
                lease_owner=None,
            )
            session.execute(
                update(OcrJob)
                .where(OcrJob.id == job_id)
                .values(lease_expires_at=None, finished_at=None if status is JobStatus.QUEUED else now)
            )
            job = session.get_one(OcrJob, job_id)
            session.get_one(Document, job.document_id).status = _DOCUMENT_STATUS[status]
            session.commit()
        if self.metrics is not None and status is not JobStatus.QUEUED and job.started_at is not None:
            self.metrics.job_ended(status, (now - job.started_at).total_seconds())
