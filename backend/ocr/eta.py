"""The time estimate of an OCR job and a batch, from the pace observed (never a promise).

A running job that has stored pages in its current run goes at its own pace: the seconds
since the run was claimed over the pages it stored since. Any other active job (queued, or
running without a page yet) goes at the recent pace: the pages of the latest runs over their
seconds (finished runs and runs in progress). ``None`` until there is a pace to go by, and for
a job that has ended.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from backend.ocr.models import ACTIVE, JobStatus, OcrJob

# The latest runs the recent pace is taken from: enough to smooth one odd document out,
# few enough to follow a change of model or of OCR workers.
RECENT_RUNS = 20


@dataclass(frozen=True)
class Run:
    """What the estimate needs of a job (a plain copy, so the arithmetic is tested without a database)."""

    status: JobStatus
    pages_done: int
    pages_total: int
    pages_at_claim: int
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: OcrJob) -> Run:
        return cls(job.status, job.pages_done, job.pages_total, job.pages_at_claim, job.started_at, job.finished_at)

    def pace(self, now: datetime) -> tuple[int, float] | None:
        """(pages stored in this run, its seconds), for a run that has stored a page and taken time."""
        if self.started_at is None or self.status not in (JobStatus.RUNNING, JobStatus.DONE):
            return None
        end = self.finished_at if self.status is JobStatus.DONE and self.finished_at else now
        pages, seconds = self.pages_done - self.pages_at_claim, (end - self.started_at).total_seconds()
        return (pages, seconds) if pages > 0 and seconds > 0 else None


def seconds_per_page(runs: Sequence[Run], now: datetime) -> float | None:
    paces = [pace for pace in (run.pace(now) for run in runs) if pace is not None]
    pages = sum(p for p, _ in paces)
    return sum(s for _, s in paces) / pages if pages else None


def job_eta(run: Run, now: datetime, recent: float | None) -> int | None:
    """Seconds until the job is done at the pace observed; None where there is none or it has ended."""
    if run.status not in ACTIVE:
        return None
    left = max(run.pages_total - run.pages_done, 0)
    own = run.pace(now) if run.status is JobStatus.RUNNING else None
    pace = own[1] / own[0] if own else recent
    return None if pace is None else math.ceil(pace * left)


def batch_eta(runs: Sequence[Run], now: datetime, recent: float | None) -> int | None:
    """The batch's jobs still to do, at their pace, shared among those of its jobs running at once."""
    active = [run for run in runs if run.status in ACTIVE]
    etas = [job_eta(run, now, recent) for run in active]
    if not active or any(eta is None for eta in etas):
        return None
    at_once = max(1, sum(1 for run in active if run.status is JobStatus.RUNNING))
    return math.ceil(sum(eta for eta in etas if eta is not None) / at_once)


def recent_pace(session: Session, now: datetime) -> float | None:
    """Seconds per page over the latest finished runs and the runs in progress."""
    rows = session.scalars(
        select(OcrJob)
        .where(
            or_(
                OcrJob.status == JobStatus.RUNNING,
                (OcrJob.status == JobStatus.DONE) & OcrJob.finished_at.is_not(None),
            )
        )
        .order_by(OcrJob.finished_at.desc().nulls_first(), OcrJob.id.desc())
        .limit(RECENT_RUNS)
    ).all()
    return seconds_per_page([Run.of(job) for job in rows], now)
