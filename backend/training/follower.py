"""The background follower of training runs: submit the ZIP, follow the OCR service's job, end the run.

Runs as an asyncio task in the app's lifespan (like the OCR job runner). Every
``APP_TRAINING_POLL_S`` it claims the active run if no live follower holds it — a new run,
or one a stopped or dead backend left behind — and follows it to its end:

- Not submitted yet (QUEUED, no job): the ZIP is built into a temporary file (in a thread),
  sent once (no retry: training is not idempotent), and the run is RUNNING with the job's id.
  A follower cut off while sending (the process died or stopped) leaves the run QUEUED
  without a job, although the OCR service may have accepted it: the next follower of a run
  taken up before first asks the service for a job of the run's model name (each run's name
  is its own) and follows that one, and sends the ZIP again only when there is none.
- Submitted: the job is asked about every poll; its progress is stored. DONE → the new
  model is judged (recognition, writer) and the run ends DONE. FAILED / CANCELLED → the run
  ends so, with the service's reason. A 404 for the job → FAILED ``TRAINING_JOB_LOST``.
  No answer (the service restarts) → tried again at the next poll, until
  ``APP_TRAINING_LOST_AFTER_S`` without an answer → FAILED. Nothing stays RUNNING for ever.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, BinaryIO, cast

from sqlalchemy.exc import SQLAlchemyError

from backend.db import Database
from backend.documents.render import RenderLimits
from backend.ocr_client import OcrClient, OcrClientError, OcrRejected, OcrUnavailable, TrainingRequest
from backend.storage import Storage, StorageUnavailableError
from backend.training.leases import Claimed, LeaseLost, RunLeases
from backend.training.models import RunStatus, TrainingKind
from backend.training.ports import ModelJudge, TrainingData
from backend.training.progress import JobState, job_state, storable
from backend.training.service import CANCELLED_BY_ADMIN

log = logging.getLogger(__name__)

# A run's own error codes: stored on the run for the admin, never an HTTP answer (like an OCR job's).
UNAVAILABLE = "OCR_SERVICE_UNAVAILABLE"
JOB_LOST = "TRAINING_JOB_LOST"
JOB_FAILED = "TRAINING_JOB_FAILED"
NO_DATA = "NOT_ENOUGH_TRAINING_DATA"
NAME_TAKEN = "MODEL_NAME_TAKEN"
SEGMENTATION_NOTE = "A segmentation model is adopted only by an admin."
NOT_JUDGED = "The new model could not be judged (see the backend's log); an admin can adopt it by hand."


class RunFollower:
    def __init__(
        self,
        leases: RunLeases,
        client: OcrClient,
        storage: Storage,
        limits: RenderLimits,
        data: TrainingData,
        judge: ModelJudge,
        *,
        poll_s: float,
        lost_after_s: float,
        epochs: int | None,
        clock: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.leases = leases
        self.client = client
        self.storage = storage
        self.limits = limits
        self.data = data
        self.judge = judge
        self.poll_s = poll_s
        self.lost_after = timedelta(seconds=lost_after_s)
        self.epochs = epochs
        self.clock = clock
        self._sleep = sleep

    @property
    def db(self) -> Database:
        return self.leases.db

    async def run(self) -> None:
        """Forever: follow the active run if it is free, then wait a poll interval."""
        while True:
            try:
                await self.tick()
            except SQLAlchemyError:
                log.warning("training follower: the database did not answer; trying again", exc_info=True)
            await self._sleep(self.poll_s)

    async def tick(self) -> bool:
        """Claim the active run and follow it to its end (or until it is no longer ours)."""
        claimed = await asyncio.to_thread(self.leases.claim, self.clock())
        if claimed is None:
            return False
        try:
            await self._follow(claimed)
        except asyncio.CancelledError:
            # The app stops: the run is handed back, so the next backend re-attaches at once.
            await asyncio.to_thread(self.leases.release, claimed.run_id)
            raise
        return True

    async def _follow(self, run: Claimed) -> None:
        keeper = asyncio.create_task(self._keep_lease(run.run_id), name=f"training-lease-{run.run_id}")
        try:
            # The service's silence counts from here at the earliest: the time this backend
            # was away (stopped, restarting) is not the service's.
            taken = self.clock()
            job_id = run.ocr_job_id or await self._submit(run)
            if job_id is not None:
                while not await self._look(run, job_id, taken):
                    await self._sleep(self.poll_s)
        except LeaseLost:
            log.info("training run %s: no longer followed here (ended or taken over)", run.run_id)
        except SQLAlchemyError:
            # The run stays as it is; its lease runs out and a follower takes it up again.
            log.warning("training run %s: the database did not answer while following it", run.run_id, exc_info=True)
        except Exception:
            # The run's boundary: whatever broke, it must not stay RUNNING (the traceback is logged).
            log.exception("training run %s failed inside the backend", run.run_id)
            await self._end(run, RunStatus.FAILED, "INTERNAL_ERROR", "Training failed inside the backend; see its log.")
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    async def _keep_lease(self, run_id: int) -> None:
        """Renew the lease every third of it while building, sending and judging take their time."""
        every = self.leases.lease.total_seconds() / 3
        while True:
            await self._sleep(every)
            try:
                await asyncio.to_thread(self.leases.record, run_id, self.clock())
            except LeaseLost:
                return
            except SQLAlchemyError:
                log.warning("training run %s: could not renew its lease; trying again", run_id, exc_info=True)

    async def _end(self, run: Claimed, status: RunStatus, code: str | None, message: str | None, **values: Any) -> None:
        # The OCR service's code and message as the columns can hold them: a refusal to store
        # them would leave the run active, and the next follower would send its ZIP again.
        code = storable(code, 64) if code is not None else None
        message = storable(message, 10_000) if message is not None else None
        try:
            await asyncio.to_thread(
                self.leases.end, run.run_id, status, self.clock(), error_code=code, error_message=message, **values
            )
        except LeaseLost:
            log.info("training run %s ended elsewhere before it could end %s here", run.run_id, status.value)

    # --- submitting ---------------------------------------------------------------------------

    async def _submit(self, run: Claimed) -> str | None:
        """Send the run's ZIP (or find the job an earlier follower sent); the job id, or None when the run ended."""
        try:
            # Only a run taken up before can have a job already (model names are the runs' own).
            existing = await job_named(self.client, run.model_name) if run.resumed else None
            if existing is not None:
                log.info("training run %s: re-attached to job %s sent before a restart", run.run_id, existing)
                return await self._running(run, existing, None, None)
            listing = await self.client.models()
            stored = stored_models(listing)
            if not run.resumed and run.model_name in stored:
                # Trained before under this name (a restored database, another backend on the
                # same service): sending would install over that model, maybe the one in use.
                message = (
                    f"The OCR service already has a model named {run.model_name} that this backend did not "
                    "train (a restored database, or another backend using the service): it is not replaced. "
                    "The next run takes the next name; or set APP_TRAINING_MODEL_PREFIX."
                )
                await self._end(run, RunStatus.FAILED, NAME_TAKEN, message)
                return None
            base_model = await self._base_model(run, listing, stored)
            with tempfile.TemporaryFile(prefix="training-", suffix=".zip") as archive:
                pages, lines = await asyncio.to_thread(
                    write_zip, self.db, self.data, self.storage, self.limits, run, cast(BinaryIO, archive)
                )
                if lines == 0:
                    message = "No corrected lines are left to train on (pages were changed or deleted since the start)."
                    await self._end(run, RunStatus.FAILED, NO_DATA, message)
                    return None
                # Cancelled while its ZIP was built: nothing is sent (LeaseLost ends the follow).
                await asyncio.to_thread(self.leases.record, run.run_id, self.clock(), while_status=RunStatus.QUEUED)
                archive.seek(0)
                request = TrainingRequest(model_name=run.model_name, base_model=base_model, epochs=self.epochs)
                submit = self.client.segtrain if run.kind is TrainingKind.SEGMENTATION else self.client.train
                try:
                    answer = await submit(archive, request)
                except OcrUnavailable:
                    # No answer is no proof the upload was refused (a proxy giving up while the
                    # service takes it, a connection lost after it): a job of the run's own model
                    # name is this run's, and is followed rather than left training unseen.
                    accepted = await self._accepted(run)
                    if accepted is None:
                        raise
                    log.info("training run %s: its job %s was accepted without an answer", run.run_id, accepted)
                    return await self._running(run, accepted, base_model, (pages, lines))
        except OcrRejected as exc:
            await self._end(run, RunStatus.FAILED, exc.code, exc.message)
            return None
        except OcrUnavailable as exc:
            await self._end(run, RunStatus.FAILED, UNAVAILABLE, exc.message)
            return None
        except StorageUnavailableError as exc:
            log.error("training run %s: the document store cannot be reached: %s", run.run_id, exc)
            await self._end(run, RunStatus.FAILED, "STORAGE_UNAVAILABLE", "The document store cannot be reached.")
            return None
        job_id = answer.get("jobId")
        if not isinstance(job_id, str) or not 0 < len(job_id) <= 100:
            await self._end(run, RunStatus.FAILED, UNAVAILABLE, "The OCR service accepted the data but named no job.")
            return None
        return await self._running(run, job_id, base_model, (pages, lines))

    async def _accepted(self, run: Claimed) -> str | None:
        """The job the service started for the run although its answer was lost, if it did."""
        try:
            return await job_named(self.client, run.model_name)
        except OcrClientError:
            return None

    async def _running(
        self, run: Claimed, job_id: str, base_model: str | None, counts: tuple[int, int] | None
    ) -> str | None:
        now = self.clock()
        values: dict[str, Any] = {
            "status": RunStatus.RUNNING,
            "ocr_job_id": job_id,
            "started_at": now,
            "answered_at": now,
        }
        if counts is not None:
            values.update(base_model=base_model, page_count=counts[0], line_count=counts[1])
        try:
            await asyncio.to_thread(self.leases.record, run.run_id, now, while_status=RunStatus.QUEUED, **values)
        except LeaseLost:
            # Cancelled while its ZIP was on the way: the job it started must not train on.
            await asyncio.to_thread(self.leases.attach_job, run.run_id, job_id)
            try:
                await self.client.cancel_training(job_id)
            except OcrClientError as exc:
                log.warning("training run %s: its job %s could not be cancelled: %s", run.run_id, job_id, exc)
            raise
        return job_id

    async def _base_model(self, run: Claimed, listing: dict[str, Any], stored: set[str]) -> str | None:
        """``listing``: the service's ``GET /models``; ``stored``: the names in it."""
        if run.kind is TrainingKind.SEGMENTATION:
            # The latest segmentation run's model (800 px) the service still has; else the
            # service's rule. A model an admin removed from the store is never named: the
            # service would fail this run and every later one on the missing base.
            earlier = await asyncio.to_thread(self.leases.previous_segmentation_models, run.run_id)
            return next((name for name in earlier if name in stored), None)
        # Recognition and writer runs fine-tune the OCR service's current default model.
        default = listing.get("default")
        return default if isinstance(default, str) and default else None

    # --- following ----------------------------------------------------------------------------

    async def _look(self, run: Claimed, job_id: str, taken: datetime) -> bool:
        """Ask about the job once and record what it says; True when the run has ended.
        ``taken``: when this follower took the run up."""
        row = await asyncio.to_thread(self.leases.read, run.run_id)
        if row.lease_owner != self.leases.owner or row.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
            raise LeaseLost(f"training run {run.run_id} left this follower")
        try:
            if row.cancel_requested:
                answer = await cancel_job(self.client, job_id)
            else:
                answer = await self.client.training_job(job_id)
        except OcrRejected as exc:
            if exc.status == 404:
                message = (
                    f"The OCR service no longer knows the training job {job_id} (it lost it, e.g. its data was reset)."
                )
                await self._end(run, RunStatus.FAILED, JOB_LOST, message)
            else:
                await self._end(run, RunStatus.FAILED, exc.code, exc.message)
            return True
        except OcrUnavailable as exc:
            last = max(row.answered_at or row.started_at or row.created_at, taken)
            if self.clock() - last < self.lost_after:
                await asyncio.to_thread(self.leases.record, run.run_id, self.clock())
                return False
            minutes = int(self.lost_after.total_seconds() // 60)
            message = (
                f"The OCR service has not answered about training job {job_id} for {minutes} minutes: {exc.message}"
            )
            await self._end(run, RunStatus.FAILED, UNAVAILABLE, message)
            return True
        state = job_state(answer, segmentation=run.kind is TrainingKind.SEGMENTATION)
        # Only an answer with a status counts as one: a service answering nonsense for ever is lost too.
        heard: dict[str, Any] = {"answered_at": self.clock()} if state.status is not None else {}
        await asyncio.to_thread(self.leases.record, run.run_id, self.clock(), **heard, **state.values())
        return await self._settle(run, state, cancelled=row.cancel_requested)

    async def _settle(self, run: Claimed, state: JobState, *, cancelled: bool) -> bool:
        if state.status == "DONE":
            await self._judge(run)
            await self._end(run, RunStatus.DONE, None, None)
            return True
        if state.status == "FAILED":
            await self._end(
                run,
                RunStatus.FAILED,
                JOB_FAILED,
                state.error or "The training job failed; the OCR service gave no reason.",
            )
            return True
        if state.status == "CANCELLED":
            reason = CANCELLED_BY_ADMIN if cancelled else "The training job was cancelled in the OCR service."
            await self._end(run, RunStatus.CANCELLED, None, state.error or reason)
            return True
        if state.status is None:
            log.warning("training run %s: the OCR service's answer about its job has no status it knows", run.run_id)
        return False

    async def _judge(self, run: Claimed) -> None:
        if run.kind is TrainingKind.SEGMENTATION:
            await asyncio.to_thread(self.leases.record, run.run_id, self.clock(), adoption_note=SEGMENTATION_NOTE)
            return
        row = await asyncio.to_thread(self.leases.read, run.run_id)
        if row.heldout_cer is not None or row.adopted or row.adoption_note is not None:
            return  # judged before a restart cut the run off: once is enough
        try:
            await self.judge.judge_and_adopt(run.run_id)
        except Exception:
            # The model is trained and installed; a failure to judge it must not lose the run.
            log.exception("training run %s: judging its model failed", run.run_id)
            await asyncio.to_thread(self.leases.record, run.run_id, self.clock(), adoption_note=NOT_JUDGED)


def write_zip(
    db: Database, data: TrainingData, storage: Storage, limits: RenderLimits, run: Claimed, dest: BinaryIO
) -> tuple[int, int]:
    """The run's training pages (the eligible ones now, less its held-out pages) into ``dest``:
    (pages, lines) written."""
    heldout = set(run.heldout_page_ids)
    with db.sessions() as session:
        found = data.eligible_pages(session, run.kind, run.writer_id)
        train = [page for page in found if page.page_id not in heldout]
        if not train:
            return 0, 0
        summary = data.write_training_zip(session, storage, limits, train, run.kind, dest)
    return summary.pages, summary.lines


def stored_models(listing: dict[str, Any]) -> set[str]:
    """The names of every model ``GET /models`` lists."""
    listed = listing.get("models")
    entries = listed if isinstance(listed, list) else []
    return {entry["name"] for entry in entries if isinstance(entry, dict) and isinstance(entry.get("name"), str)}


async def job_named(client: OcrClient, model_name: str) -> str | None:
    """The id of the OCR service's training job for ``model_name``, if it keeps one."""
    answer = await client.training_jobs()
    for job in answer.get("jobs") or []:
        if isinstance(job, dict) and job.get("modelName") == model_name and isinstance(job.get("jobId"), str):
            return str(job["jobId"])
    return None


async def cancel_job(client: OcrClient, job_id: str) -> dict[str, Any]:
    """Cancel the OCR service's job; one that has ended already (409) is read as it ended.
    Shared by the cancel route and the follower, which both may send it."""
    try:
        return await client.cancel_training(job_id)
    except OcrRejected as exc:
        if exc.status != 409:
            raise
        return await client.training_job(job_id)


async def cancel_unseen_job(client: OcrClient, model_name: str) -> None:
    """Cancel the job a run ended before it had one may still have started: a follower cut off
    or hung while sending its ZIP leaves the run without a job although the OCR service took
    it. Best effort: a service that does not answer is logged, the run stays CANCELLED."""
    try:
        job_id = await job_named(client, model_name)
        if job_id is not None:
            await cancel_job(client, job_id)
            log.info("training job %s of %s, sent before its run was cancelled, is cancelled", job_id, model_name)
    except OcrClientError as exc:
        log.warning("a training job of %s may still run in the OCR service: %s", model_name, exc)
