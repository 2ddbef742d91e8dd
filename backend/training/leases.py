"""Training runs in the database as the follower sees them: claim, renew, record, end.

Like the OCR job queue (``backend/ocr/queue.py``): a follower claims an active run whose
lease is free or expired (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a guarded UPDATE that
one claimant wins on both databases), and every later change is guarded by its lease, so a
follower that stalled past its lease and lost the run changes nothing. Each call is one
short transaction; none is open while the OCR service works.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update

from backend.db import Database, skip_locked
from backend.training.models import ACTIVE_RUN, RunStatus, TrainingKind, TrainingRun
from backend.training.service import end_run


class LeaseLost(Exception):  # noqa: N818 - a state, not a failure of this follower's making
    """The run is no longer this follower's: it ended (an admin cancelled it) or another took it."""


@dataclass(frozen=True)
class Claimed:
    run_id: int
    kind: TrainingKind
    writer_id: int | None
    status: RunStatus
    ocr_job_id: str | None
    model_name: str
    heldout_page_ids: tuple[int, ...]
    # A follower had it before (it may have been cut off while sending the run's ZIP).
    resumed: bool = False


class RunLeases:
    def __init__(self, db: Database, owner: str, lease: timedelta) -> None:
        self.db = db
        self.owner = owner
        self.lease = lease

    def claim(self, now: datetime) -> Claimed | None:
        """Take the active run (there is at most one) if no live follower holds it."""
        takeable = and_(
            TrainingRun.active.is_(True),
            or_(TrainingRun.lease_expires_at.is_(None), TrainingRun.lease_expires_at < now),
        )
        with self.db.sessions() as session:
            run = session.scalar(skip_locked(select(TrainingRun).where(takeable).order_by(TrainingRun.id).limit(1)))
            if run is None:
                return None
            resumed = run.lease_owner is not None
            taken = session.execute(
                update(TrainingRun)
                .where(TrainingRun.id == run.id, takeable)
                .values(lease_owner=self.owner, lease_expires_at=now + self.lease)
                .execution_options(synchronize_session=False)
            )
            if getattr(taken, "rowcount", 0) != 1:
                session.rollback()
                return None
            session.commit()
            session.refresh(run)
            return Claimed(
                run.id,
                run.kind,
                run.writer_id,
                run.status,
                run.ocr_job_id,
                run.model_name,
                tuple(int(page) for page in run.heldout_page_ids or []),
                resumed,
            )

    def record(self, run_id: int, now: datetime, *, while_status: RunStatus | None = None, **values: Any) -> None:
        """Renew the lease and store ``values`` (only while the run is ``while_status``, if given)."""
        # A lease released (this process stopping) is not renewed by a call still under way.
        guard = [
            TrainingRun.id == run_id,
            TrainingRun.lease_owner == self.owner,
            TrainingRun.lease_expires_at.is_not(None),
        ]
        guard.append(
            TrainingRun.status == while_status if while_status is not None else TrainingRun.status.in_(ACTIVE_RUN)
        )
        with self.db.sessions() as session:
            result = session.execute(
                update(TrainingRun)
                .where(*guard)
                .values(lease_expires_at=now + self.lease, **values)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0) != 1:
                session.rollback()
                raise LeaseLost(f"training run {run_id} is no longer followed by {self.owner}")
            session.commit()

    def read(self, run_id: int) -> TrainingRun:
        with self.db.sessions() as session:
            return session.get_one(TrainingRun, run_id)

    def end(self, run_id: int, status: RunStatus, now: datetime, **values: Any) -> None:
        with self.db.sessions() as session:
            if not end_run(session, run_id, status, now, owner=self.owner, **values):
                session.rollback()
                raise LeaseLost(f"training run {run_id} is no longer followed by {self.owner}")
            session.commit()

    def release(self, run_id: int) -> None:
        """Hand the run back (this process stops): another follower takes it up at once. The
        owner stays as a mark that the run was taken up (an end clears it)."""
        with self.db.sessions() as session:
            session.execute(
                update(TrainingRun)
                .where(TrainingRun.id == run_id, TrainingRun.lease_owner == self.owner)
                .values(lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )
            session.commit()

    def previous_segmentation_models(self, run_id: int) -> list[str]:
        """The models of the segmentation runs that ended DONE before this one, latest first."""
        with self.db.sessions() as session:
            return list(
                session.scalars(
                    select(TrainingRun.model_name)
                    .where(
                        TrainingRun.kind == TrainingKind.SEGMENTATION,
                        TrainingRun.status == RunStatus.DONE,
                        TrainingRun.id < run_id,
                    )
                    .order_by(TrainingRun.id.desc())
                )
            )

    def attach_job(self, run_id: int, job_id: str) -> None:
        """Note the job of a run that ended while its ZIP was being submitted (for the record)."""
        with self.db.sessions() as session:
            session.execute(update(TrainingRun).where(TrainingRun.id == run_id).values(ocr_job_id=job_id))
            session.commit()
