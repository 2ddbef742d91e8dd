"""Training runs as the admin sees them: the overview, start, the list, cancel, adopt by hand.

Starting a run only records it (QUEUED, with its held-out pages) and answers; the follower
(``follower.py``) builds the ZIP, submits it and follows the OCR service's job to its end.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.documents.models import Document, Writer
from backend.errors import AppError, ErrorCode
from backend.ocr_client import OcrClient
from backend.settings import Settings
from backend.training.guard import HELDOUT_SEED, PAGES, active_run, already_running, guard, threshold_of
from backend.training.models import ACTIVE_RUN, RunStatus, TrainingKind, TrainingRun
from backend.training.naming import model_name
from backend.training.ports import ModelJudge, PageLike, TrainingData
from backend.training.schemas import (
    EpochOut,
    KindOut,
    ModelRef,
    OcrServiceOut,
    OverviewOut,
    RunOut,
    RunPage,
    WriterKindOut,
    WriterRef,
)
from backend.users.models import User

# A run's own error codes (stored on the run, never an HTTP answer; like an OCR job's).
CANCELLED_BY_ADMIN = "An admin cancelled the run."


def run_out(run: TrainingRun, writer: Writer | None) -> RunOut:
    values: dict[str, Any] = {
        name: getattr(run, name)
        for name in RunOut.model_fields
        if name not in {"writer", "metrics", "heldout_page_count", "info"}
    }
    return RunOut(
        **values,
        writer=WriterRef(slug=writer.slug, name=writer.name) if writer else None,
        metrics=[EpochOut.model_validate(m) for m in run.metrics or []],
        info=[str(note) for note in run.info or []],
        heldout_page_count=len(run.heldout_page_ids or []),
    )


def end_run(
    session: Session,
    run_id: int,
    status: RunStatus,
    now: datetime,
    *,
    owner: str | None = None,
    where: Sequence[ColumnElement[bool]] = (),
    **values: Any,
) -> bool:
    """End an active run (DONE/FAILED/CANCELLED), its lease released; False where it had ended
    already or (with ``owner``) is no longer that follower's. The caller commits."""
    guard = [TrainingRun.id == run_id, TrainingRun.status.in_(ACTIVE_RUN), *where]
    if owner is not None:
        guard.append(TrainingRun.lease_owner == owner)
    result = session.execute(
        update(TrainingRun)
        .where(*guard)
        .values(status=status, active=None, finished_at=now, lease_owner=None, lease_expires_at=None, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


class TrainingRuns:
    def __init__(self, settings: Settings, data: TrainingData, judge: ModelJudge) -> None:
        self.settings = settings
        self.data = data
        self.judge = judge

    # --- reading ------------------------------------------------------------------------------

    def get(self, session: Session, run_id: int) -> TrainingRun:
        run = session.get(TrainingRun, run_id)
        if run is None:
            raise AppError(ErrorCode.TRAINING_RUN_NOT_FOUND, f"There is no training run {run_id}.")
        return run

    def out(self, session: Session, run: TrainingRun) -> RunOut:
        writer = session.get(Writer, run.writer_id) if run.writer_id is not None else None
        return run_out(run, writer)

    def page(self, session: Session, limit: int, before: int | None = None) -> RunPage:
        query = select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit + 1)
        if before is not None:
            query = query.where(TrainingRun.id < before)
        runs = list(session.scalars(query))
        more = len(runs) > limit
        runs = runs[:limit]
        return RunPage(runs=self._outs(session, runs), next_before=runs[-1].id if more else None)

    def _outs(self, session: Session, runs: Sequence[TrainingRun]) -> list[RunOut]:
        ids = {run.writer_id for run in runs if run.writer_id is not None}
        writers = {w.id: w for w in session.scalars(select(Writer).where(Writer.id.in_(ids)))} if ids else {}
        return [run_out(run, writers.get(run.writer_id) if run.writer_id else None) for run in runs]

    def overview(self, session: Session, ocr: OcrClient, service: OcrServiceOut) -> OverviewOut:
        kinds = [self._kind(session, ocr, kind) for kind in (TrainingKind.RECOGNITION, TrainingKind.SEGMENTATION)]
        has_documents = exists().where(Document.writer_id == Writer.id, Document.deleted_at.is_(None))
        writers = list(session.scalars(select(Writer).where(has_documents).order_by(Writer.name, Writer.id)))
        runs = session.scalars(
            select(TrainingRun).order_by(TrainingRun.id.desc()).limit(self.settings.training_runs_listed)
        )
        return OverviewOut(
            training_enabled=self.settings.ocr_training_token is not None,
            kinds=kinds,
            writers=self._writers(session, ocr, writers),
            runs=self._outs(session, list(runs)),
            ocr_service=service,
        )

    def _kind(
        self,
        session: Session,
        ocr: OcrClient,
        kind: TrainingKind,
        writer: Writer | None = None,
        *,
        pages: Sequence[PageLike] | None = None,
    ) -> KindOut:
        verdict = guard(session, self.settings, ocr, self.data, kind, writer, HELDOUT_SEED, pages)
        threshold, unit = threshold_of(self.settings, kind)
        assessment = verdict.assessment
        return KindOut(
            kind=kind,
            eligible_lines=assessment.eligible_lines if assessment else 0,
            eligible_pages=len(assessment.pages) if assessment else 0,
            threshold=threshold,
            threshold_unit="pages" if unit == PAGES else "lines",
            can_start=verdict.refusal is None,
            reason=verdict.refusal.message if verdict.refusal else None,
            reason_code=verdict.refusal.code.value if verdict.refusal else None,
            reason_details=verdict.refusal.details if verdict.refusal else None,
        )

    def _writers(self, session: Session, ocr: OcrClient, writers: Sequence[Writer]) -> list[WriterKindOut]:
        """Every writer's line of the overview; the data of all of them is counted in a few queries."""
        if not writers:
            return []
        per_writer = TrainingRun.writer_id.is_not(None)
        # (A Result has keys(): dict() would take it for a mapping, so the pairs are built here.)
        last_done: dict[int | None, datetime] = {
            writer_id: created
            for writer_id, created in session.execute(
                select(TrainingRun.writer_id, func.max(TrainingRun.created_at))
                .where(per_writer, TrainingRun.status == RunStatus.DONE)
                .group_by(TrainingRun.writer_id)
            )
        }
        enabled = self.settings.ocr_training_token is not None
        pages = self.data.eligible_by_writer(session) if enabled else {}
        since = {writer.id: last_done.get(writer.id) for writer in writers}
        new_lines = self.data.new_lines_by_writer(session, since) if enabled else {}
        outs = []
        for writer in writers:
            kind = self._kind(session, ocr, TrainingKind.WRITER, writer, pages=pages.get(writer.id, []))
            new = new_lines.get(writer.id, 0)
            first = last_done.get(writer.id) is None
            outs.append(
                WriterKindOut(
                    **kind.model_dump(),
                    writer=WriterRef(slug=writer.slug, name=writer.name),
                    model=ModelRef(name=writer.model_name, run_id=writer.model_run_id) if writer.model_name else None,
                    new_lines_since_last_run=new,
                    suggested=new >= self.settings.training_writer_suggest_lines or (first and kind.can_start),
                )
            )
        return outs

    # --- changing -----------------------------------------------------------------------------

    def start(
        self, session: Session, ocr: OcrClient, kind: TrainingKind, writer_slug: str | None, user: User, now: datetime
    ) -> TrainingRun:
        """Check the one guard, choose the held-out pages and record the run QUEUED."""
        if kind is TrainingKind.WRITER and writer_slug is None:
            raise AppError(ErrorCode.INVALID_REQUEST, 'A writer run needs the writer: {"writer": "<slug>"}.')
        if kind is not TrainingKind.WRITER and writer_slug is not None:
            raise AppError(ErrorCode.INVALID_REQUEST, f"A {kind.value} run is not for one writer; leave out 'writer'.")
        writer = None
        if writer_slug is not None:
            writer = session.scalar(select(Writer).where(Writer.slug == writer_slug))
            if writer is None:
                raise AppError(ErrorCode.WRITER_NOT_FOUND, f"There is no writer '{writer_slug}'.")
        sequence = next_sequence(session, kind, writer.id if writer else None)
        verdict = guard(session, self.settings, ocr, self.data, kind, writer, HELDOUT_SEED)
        if verdict.refusal is not None:
            raise verdict.refusal
        assessment = verdict.assessment
        assert assessment is not None  # counted whenever training is on
        run = TrainingRun(
            kind=kind,
            writer_id=writer.id if writer else None,
            status=RunStatus.QUEUED,
            active=True,
            sequence=sequence,
            model_name=model_name(kind, self.settings.training_model_prefix, sequence, writer.slug if writer else None),
            line_count=assessment.train_lines,
            page_count=len(assessment.train),
            heldout_line_count=assessment.heldout_lines,
            heldout_page_ids=sorted(page.page_id for page in assessment.heldout),
            metrics=[],
            info=[],
            adopted=False,
            cancel_requested=False,
            created_by=user.id,
            created_at=now,
        )
        session.add(run)
        try:
            session.commit()
        except IntegrityError:
            # Another start committed its run between our guard and this insert: the unique
            # ``active`` lets only one of them in.
            session.rollback()
            running = active_run(session)
            if running is None:
                raise
            raise already_running(running) from None
        return run

    def request_cancel(self, session: Session, run_id: int, user: User, now: datetime) -> TrainingRun:
        """A run not yet submitted ends CANCELLED at once; a submitted one is marked, and its job
        is cancelled by the caller (and again by the follower until the OCR service confirms)."""
        run = self.get(session, run_id)
        if run.status in ACTIVE_RUN and run.ocr_job_id is None:
            # Guarded on "no job yet": a follower that submitted meanwhile wins, and the run
            # is cancelled through its job below.
            no_job = TrainingRun.ocr_job_id.is_(None)
            if end_run(
                session, run_id, RunStatus.CANCELLED, now, where=[no_job], cancel_requested=True,
                cancelled_by=user.id, error_message=CANCELLED_BY_ADMIN,
            ):  # fmt: skip
                session.commit()
                session.refresh(run)
                return run
            session.rollback()
            session.refresh(run)
        if run.status not in ACTIVE_RUN:
            raise AppError(
                ErrorCode.TRAINING_RUN_FINISHED,
                f"Training run {run_id} has ended already ({run.status.value}).",
                details={"status": run.status.value},
            )
        session.execute(
            update(TrainingRun)
            .where(TrainingRun.id == run_id, TrainingRun.status.in_(ACTIVE_RUN))
            .values(cancel_requested=True, cancelled_by=user.id)
        )
        session.commit()
        session.refresh(run)
        return run

    def confirm_cancelled(self, session: Session, run_id: int, now: datetime, message: str | None) -> None:
        end_run(session, run_id, RunStatus.CANCELLED, now, error_message=message or CANCELLED_BY_ADMIN)
        session.commit()

    def adoptable(self, session: Session, run_id: int) -> TrainingRun:
        run = self.get(session, run_id)
        if run.status is not RunStatus.DONE:
            raise AppError(
                ErrorCode.MODEL_NOT_ADOPTABLE,
                f"Training run {run_id} has no model to adopt: it is {run.status.value}, not DONE.",
            )
        if run.adopted:
            raise AppError(ErrorCode.MODEL_NOT_ADOPTABLE, f"The model of training run {run_id} is adopted already.")
        return run


def next_sequence(session: Session, kind: TrainingKind, writer_id: int | None) -> int:
    """The number of the next run of this kind (and writer): its model is ``…-v<n>``."""
    query = select(func.max(TrainingRun.sequence)).where(TrainingRun.kind == kind)
    if writer_id is not None:
        query = query.where(TrainingRun.writer_id == writer_id)
    return int(session.scalar(query) or 0) + 1
