"""Starting OCR jobs and batches, reading their state, cancelling them, re-queuing a batch's failed documents."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, case, func, select, update
from sqlalchemy.orm import Session

from backend.documents.models import Document, DocumentStatus, Page
from backend.errors import AppError, ErrorCode
from backend.metrics import Metrics
from backend.ocr.eta import Run, batch_eta, job_eta, recent_pace
from backend.ocr.models import ACTIVE, JobStatus, OcrBatch, OcrJob
from backend.ocr.schemas import BatchOut, JobOut
from backend.users.models import Role, User


def job_out(job: OcrJob, eta_seconds: int | None = None) -> JobOut:
    out = JobOut.model_validate(job)
    out.eta_seconds = eta_seconds
    return out


def _check_discard(user: User, documents: Sequence[Document], what: str) -> None:
    """403 naming the documents whose corrections ``user`` may not discard (only an admin or the uploader may)."""
    if user.role is Role.ADMIN:
        return
    refused = sorted(document.id for document in documents if document.created_by != user.id)
    if refused:
        raise AppError(
            ErrorCode.FORBIDDEN,
            f"Only an admin or the person who uploaded a document may {what}: "
            + ", ".join(f"document {i}" for i in refused[:20])
            + ".",
            details={"documentIds": refused},
        )


def settle_documents(session: Session, document_ids: Sequence[int]) -> None:
    """A document whose OCR was cancelled says what it holds: DONE (every page read), PARTIAL, or NEW."""
    read = func.sum(case((Page.ocr_at.is_not(None), 1), else_=0))
    rows = session.execute(
        select(Page.document_id, func.count(), read)
        .where(Page.document_id.in_(document_ids))
        .group_by(Page.document_id)
    ).all()
    for document_id, pages, pages_read in rows:
        status = DocumentStatus.NEW
        if pages_read and pages_read >= pages:
            status = DocumentStatus.DONE
        elif pages_read:
            status = DocumentStatus.PARTIAL
        session.execute(
            update(Document)
            .where(Document.id == document_id)
            .values(status=status)
            .execution_options(synchronize_session=False)
        )


class Jobs:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics

    def start(
        self,
        session: Session,
        document_ids: Sequence[int],
        user: User,
        model: str | None,
        now: datetime,
        *,
        batch: bool,
        discard_corrections: bool = False,
    ) -> tuple[int | None, list[OcrJob]]:
        """Queue one job per document (in one transaction: all or none); a batch row when asked.

        ``discard_corrections``: the pages read drop their corrected lines (archived, with their
        history) instead of keeping them; only an admin or the document's uploader may ask.
        """
        wanted = list(dict.fromkeys(document_ids))
        documents = {
            d.id: d
            for d in session.scalars(
                select(Document)
                .where(Document.id.in_(wanted), Document.deleted_at.is_(None))
                # Locked, so two starts racing on one document cannot both find no active job.
                .with_for_update(of=Document)
            )
        }
        missing = [i for i in wanted if i not in documents]
        if missing:
            raise AppError(
                ErrorCode.DOCUMENT_NOT_FOUND,
                f"There is no document {', '.join(map(str, missing[:20]))}.",
                details={"documentIds": missing},
            )
        if discard_corrections:
            _check_discard(user, list(documents.values()), "discard its corrections")
        active = session.scalars(
            select(OcrJob).where(OcrJob.document_id.in_(wanted), OcrJob.status.in_(ACTIVE)).order_by(OcrJob.id)
        ).all()
        if active:
            raise AppError(
                ErrorCode.OCR_ALREADY_RUNNING,
                "OCR is already queued or running for "
                + ", ".join(f"document {job.document_id} (job {job.id})" for job in active[:20])
                + ".",
                details={"jobIds": [job.id for job in active]},
            )
        batch_id: int | None = None
        if batch:
            row = OcrBatch(created_by=user.id, created_at=now)
            session.add(row)
            session.flush()
            batch_id = row.id
        jobs = [
            OcrJob(
                batch_id=batch_id,
                document_id=document_id,
                status=JobStatus.QUEUED,
                model_requested=model,
                pages_done=0,
                pages_total=documents[document_id].page_count,
                attempts=0,
                pages_at_claim=0,
                discard_corrections=discard_corrections,
                corrections_discarded=0,
                created_by=user.id,
                created_at=now,
            )
            for document_id in wanted
        ]
        session.add_all(jobs)
        for document in documents.values():
            document.status = DocumentStatus.QUEUED
        session.commit()
        return batch_id, jobs

    def job(self, session: Session, job_id: int) -> OcrJob:
        job = session.get(OcrJob, job_id)
        if job is None:
            raise AppError(ErrorCode.OCR_JOB_NOT_FOUND, f"There is no OCR job {job_id}.")
        return job

    def _batch(self, session: Session, batch_id: int) -> OcrBatch:
        batch = session.get(OcrBatch, batch_id)
        if batch is None:
            raise AppError(ErrorCode.OCR_BATCH_NOT_FOUND, f"There is no OCR batch {batch_id}.")
        return batch

    def job_out(self, session: Session, job: OcrJob, now: datetime) -> JobOut:
        """The job with its time estimate (the recent pace is read only for a job that may need it)."""
        recent = recent_pace(session, now) if job.status in ACTIVE else None
        return job_out(job, job_eta(Run.of(job), now, recent))

    def batch(self, session: Session, batch_id: int, now: datetime) -> BatchOut:
        batch = self._batch(session, batch_id)
        jobs = session.scalars(select(OcrJob).where(OcrJob.batch_id == batch_id).order_by(OcrJob.id)).all()
        counts = Counter(job.status for job in jobs)
        runs = [Run.of(job) for job in jobs]
        recent = recent_pace(session, now) if any(job.status in ACTIVE for job in jobs) else None
        return BatchOut(
            id=batch.id,
            created_at=batch.created_at,
            pages_done=sum(job.pages_done for job in jobs),
            pages_total=sum(job.pages_total for job in jobs),
            counts={status: counts.get(status, 0) for status in JobStatus},
            eta_seconds=batch_eta(runs, now, recent),
            jobs=[job_out(job, job_eta(run, now, recent)) for job, run in zip(jobs, runs, strict=True)],
        )

    def cancel(self, session: Session, job_id: int, user: User, now: datetime) -> JobOut:
        """Cancel one job: 409 OCR_JOB_FINISHED if it has already ended."""
        job = self.job(session, job_id)
        cancelled = self._cancel(session, [job.id], user, now)
        if not cancelled:
            session.refresh(job)
            raise AppError(
                ErrorCode.OCR_JOB_FINISHED,
                f"OCR job {job_id} has already ended ({job.status.value}); there is nothing to cancel.",
                details={"status": job.status.value},
            )
        session.refresh(job)
        return job_out(job)

    def cancel_batch(self, session: Session, batch_id: int, user: User, now: datetime) -> list[int]:
        """Cancel every job of the batch still queued or running; 409 if none is."""
        self._batch(session, batch_id)
        ids = list(session.scalars(select(OcrJob.id).where(OcrJob.batch_id == batch_id).order_by(OcrJob.id)))
        cancelled = self._cancel(session, ids, user, now)
        if not cancelled:
            raise AppError(
                ErrorCode.OCR_JOB_FINISHED,
                f"Every job of OCR batch {batch_id} has already ended; there is nothing to cancel.",
            )
        return cancelled

    def _cancel(self, session: Session, job_ids: Sequence[int], user: User, now: datetime) -> list[int]:
        """End the given jobs still active as CANCELLED, in one transaction; the ids it cancelled."""
        if not job_ids:
            return []
        stopped = self.stop(session, OcrJob.id.in_(job_ids), user, now)
        if not stopped:
            session.rollback()
            return []
        session.commit()
        self.record_stopped(stopped, now)
        return sorted(stopped)

    def stop(
        self, session: Session, which: ColumnElement[bool], user: User, now: datetime
    ) -> dict[int, datetime | None]:
        """Mark the active jobs ``which`` selects CANCELLED, without committing (the caller's
        transaction may hold more: moving a document to the trash). ``{id: started_at}`` of each
        job stopped (started_at None for a queued one); after the commit, :meth:`record_stopped`.

        Through the database only, so it reaches a job run by any backend process: the UPDATE is
        guarded by the status (of a cancel and a runner's last page or its end, exactly one wins),
        and the runner sees its job is no longer RUNNING under its lease within APP_OCR_POLL_S,
        closes the stream and stores nothing more. The pages stored stay.
        """
        # Locked on PostgreSQL: a runner's page commit in flight finishes first (or waits).
        jobs = session.scalars(
            select(OcrJob).where(which, OcrJob.status.in_(ACTIVE)).order_by(OcrJob.id).with_for_update()
        ).all()
        if not jobs:
            return {}
        started = {job.id: job.started_at if job.status is JobStatus.RUNNING else None for job in jobs}
        # RETURNING: on SQLite (no row locks) a job read as active above may have ended since
        # (another cancel, the runner's end); only the rows this UPDATE changed count as stopped.
        changed = session.execute(
            update(OcrJob)
            .where(OcrJob.id.in_(list(started)), OcrJob.status.in_(ACTIVE))
            .values(
                status=JobStatus.CANCELLED,
                cancelled_by=user.id,
                finished_at=now,
                lease_owner=None,
                lease_expires_at=None,
                error_code=None,
                error_message=None,
            )
            .returning(OcrJob.id, OcrJob.document_id)
            .execution_options(synchronize_session=False)
        ).all()
        if changed:
            settle_documents(session, [document_id for _, document_id in changed])
        return {job_id: started[job_id] for job_id, _ in changed}

    def record_stopped(self, stopped: dict[int, datetime | None], now: datetime) -> None:
        """The duration metric of the running jobs :meth:`stop` ended (once their end is committed)."""
        if self.metrics is None:
            return
        for started_at in stopped.values():
            if started_at is not None:
                self.metrics.job_ended(JobStatus.CANCELLED, (now - started_at).total_seconds())

    def retry_batch(self, session: Session, batch_id: int, user: User, *, include_cancelled: bool = False) -> list[int]:
        """Re-queue exactly the batch's FAILED jobs (and its CANCELLED ones when the person asks);
        each resumes after the pages it stored. A document that has another job queued or
        running meanwhile is left out, so no document is ever read by two jobs at once; so is a
        document in the trash. A job that discards corrections is re-queued only by someone who
        may start one (an admin or the uploader): it would drop what people corrected since."""
        self._batch(session, batch_id)
        statuses = (JobStatus.FAILED, JobStatus.CANCELLED) if include_cancelled else (JobStatus.FAILED,)
        found = session.execute(
            select(OcrJob, Document)
            .join(Document, Document.id == OcrJob.document_id)
            .where(OcrJob.batch_id == batch_id, OcrJob.status.in_(statuses), Document.deleted_at.is_(None))
            .order_by(OcrJob.id)
            .with_for_update(of=OcrJob)
        ).all()
        discarding = [document for job, document in found if job.discard_corrections]
        _check_discard(user, discarding, "re-run OCR that discards its corrections")
        failed = [job for job, _ in found]
        busy = set(
            session.scalars(
                select(OcrJob.document_id).where(
                    OcrJob.document_id.in_([job.document_id for job in failed]), OcrJob.status.in_(ACTIVE)
                )
            )
        )
        failed = [job for job in failed if job.document_id not in busy]
        ids = [job.id for job in failed]
        if ids:
            session.execute(
                update(OcrJob)
                .where(OcrJob.id.in_(ids), OcrJob.status.in_(statuses))
                .values(
                    status=JobStatus.QUEUED,
                    error_code=None,
                    error_message=None,
                    finished_at=None,
                    attempts=0,
                    cancelled_by=None,
                )
                .execution_options(synchronize_session=False)
            )
            session.execute(
                update(Document)
                .where(Document.id.in_([job.document_id for job in failed]))
                .values(status=DocumentStatus.QUEUED)
                .execution_options(synchronize_session=False)
            )
        session.commit()
        return ids
