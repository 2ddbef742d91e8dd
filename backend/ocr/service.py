"""Starting OCR jobs and batches, reading their state, re-queuing a batch's failed documents."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend.documents.models import Document, DocumentStatus
from backend.errors import AppError, ErrorCode
from backend.ocr.models import ACTIVE, JobStatus, OcrBatch, OcrJob
from backend.ocr.schemas import BatchOut, JobOut
from backend.users.models import User


def job_out(job: OcrJob) -> JobOut:
    return JobOut.model_validate(job)


class Jobs:
    def start(
        self,
        session: Session,
        document_ids: Sequence[int],
        user: User,
        model: str | None,
        now: datetime,
        *,
        batch: bool,
    ) -> tuple[int | None, list[OcrJob]]:
        """Queue one job per document (in one transaction: all or none); a batch row when asked."""
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

    def batch(self, session: Session, batch_id: int) -> BatchOut:
        batch = self._batch(session, batch_id)
        jobs = session.scalars(select(OcrJob).where(OcrJob.batch_id == batch_id).order_by(OcrJob.id)).all()
        counts = Counter(job.status for job in jobs)
        return BatchOut(
            id=batch.id,
            created_at=batch.created_at,
            pages_done=sum(job.pages_done for job in jobs),
            pages_total=sum(job.pages_total for job in jobs),
            counts={status: counts.get(status, 0) for status in JobStatus},
            jobs=[job_out(job) for job in jobs],
        )

    def retry_batch(self, session: Session, batch_id: int) -> list[int]:
        """Re-queue exactly the batch's FAILED jobs; each resumes after the pages it stored."""
        self._batch(session, batch_id)
        failed = session.scalars(
            select(OcrJob)
            .where(OcrJob.batch_id == batch_id, OcrJob.status == JobStatus.FAILED)
            .order_by(OcrJob.id)
            .with_for_update()
        ).all()
        ids = [job.id for job in failed]
        if ids:
            session.execute(
                update(OcrJob)
                .where(OcrJob.id.in_(ids), OcrJob.status == JobStatus.FAILED)
                .values(status=JobStatus.QUEUED, error_code=None, error_message=None, finished_at=None, attempts=0)
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
