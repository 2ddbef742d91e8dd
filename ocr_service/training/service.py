"""The training side of the OCR service: accept a job, run its trainer process, install the result.

A job goes QUEUED → RUNNING → DONE | FAILED | CANCELLED. Each runs in its own trainer
process (see :mod:`ocr_service.training.runner` for why), watched by one supervisor thread
per job. This class keeps the jobs and their life cycle; the parts each have a module:
requests are judged in :mod:`.requests`, the base model is chosen in :mod:`.base_models`,
the trainer process is run and watched in :mod:`.trainer_process` (its progress read in
:mod:`.progress`), and a run that ended is judged and installed in :mod:`.installer`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ocr_service.engine.train import SEGMENTATION_SPEC, TrainingPlan
from ocr_service.engine.validate import model_checker
from ocr_service.errors import AppError, ErrorCode
from ocr_service.model_ref import ModelFacts
from ocr_service.settings import Settings
from ocr_service.store import ModelStore
from ocr_service.training import runner
from ocr_service.training.archive import ArchiveLimits, extract_training_zip
from ocr_service.training.base_models import BaseModelChooser, JobFailedError
from ocr_service.training.datasets import TrainingData, scan_training_data
from ocr_service.training.installer import TrainedModelInstaller
from ocr_service.training.jobs import Job, JobStatus, JobStore, new_job_id, now_iso
from ocr_service.training.progress import ProgressReader, epoch_report
from ocr_service.training.requests import TrainingRequest, check_training_request
from ocr_service.training.trainer_process import (
    KILL_WAIT_S,
    Ending,
    kill_group,
    kill_orphan,
    start_trainer,
    watch_trainer,
)
from ocr_service.training.verdict import exit_reason, last_line, read_result
from ocr_service.training.watchdog import Watchdog

__all__ = ["TrainingRequest", "TrainingService"]

log = logging.getLogger(__name__)

DATA_DIR = "data"
LOG_FILE = "trainer.log"

TrainerCommand = Callable[[Path], list[str]]
Clock = Callable[[], float]


def default_trainer_command(job_dir: Path, log_level: str) -> list[str]:
    # Settings reach the trainer as arguments: it reads nothing from the environment.
    return [sys.executable, "-m", "ocr_service.training.runner", "--log-level", log_level, str(job_dir)]


@dataclass
class _Run:
    job: Job
    data: TrainingData
    request: TrainingRequest
    cancel: threading.Event = field(default_factory=threading.Event)
    stopping: str | None = None  # why the service is stopping the job (shutdown)
    installing: bool = False
    process: subprocess.Popen[bytes] | None = None
    thread: threading.Thread | None = None
    nan_loss: bool = False
    base_alphabet_size: int | None = None


class TrainingService:
    def __init__(
        self,
        settings: Settings,
        store: ModelStore,
        *,
        trainer_command: TrainerCommand | None = None,
        clock: Clock = time.monotonic,
        poll_interval_s: float = 0.5,
        validate: Callable[[Path], ModelFacts] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.jobs = JobStore(settings.training_dir)
        self._command = trainer_command or functools.partial(default_trainer_command, log_level=settings.log_level)
        validate = validate or model_checker(settings)
        self._clock = clock
        self._poll_s = poll_interval_s
        self._bases = BaseModelChooser(store, settings.segtrain_height, validate)
        self._installer = TrainedModelInstaller(store, validate)
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._uploads = 0

    # --- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Report jobs a previous process left QUEUED or RUNNING as FAILED, and stop their trainers."""
        for job in self.jobs.all():
            if job.status.finished:
                continue
            if job.trainer_pid:
                self._kill_orphan(job)
            self._finish(job, JobStatus.FAILED, "interrupted: the OCR service restarted while this job ran")
            log.warning("training job %s was interrupted by a restart; marked FAILED", job.job_id)
        self.jobs.prune(self.settings.training_keep_jobs)

    def _kill_orphan(self, job: Job) -> None:
        pid = job.trainer_pid
        assert pid is not None
        if kill_orphan(pid, self.jobs.dir_of(job.job_id)):
            log.warning("killed trainer process %d left over from job %s", pid, job.job_id)

    def shutdown(self) -> None:
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            run.stopping = "interrupted: the OCR service stopped while this job ran"
            run.cancel.set()
        for run in runs:
            if run.thread is not None:
                run.thread.join(timeout=KILL_WAIT_S + 10)

    # --- queries ---------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        with self._lock:
            run = self._runs.get(job_id)
            if run is not None:
                return Job.from_json(run.job.to_json())
        job = self.jobs.load(job_id)
        if job is None:
            raise AppError(ErrorCode.JOB_NOT_FOUND, f"There is no training job '{job_id}'.")
        return job

    def all_jobs(self) -> list[Job]:
        return self.jobs.all()

    def models_in_use(self) -> set[str]:
        with self._lock:
            names: set[str] = set()
            for run in self._runs.values():
                if run.job.status.finished:
                    continue
                names.add(run.job.model_name)
                if run.job.base_model:
                    names.add(run.job.base_model)
            return names

    # --- submitting ------------------------------------------------------------------------
    @contextlib.contextmanager
    def upload_slot(self) -> Iterator[None]:
        """A place for one upload, taken before its body is read: TRAINING_BUSY if the running
        jobs and the uploads under way already fill OCR_TRAINING_MAX_JOBS, so concurrent uploads
        cannot each spool a gigabyte only to be refused afterwards."""
        with self._lock:
            self._refuse_if_busy(self._uploads)
            self._uploads += 1
        try:
            yield
        finally:
            with self._lock:
                self._uploads -= 1

    def _refuse_if_busy(self, uploads: int = 0) -> None:
        # The caller holds self._lock. A run whose job has its final state is only tidying up.
        active = sorted(job_id for job_id, run in self._runs.items() if not run.job.status.finished)
        if len(active) + uploads >= self.settings.training_max_jobs:
            running = f"a training job is running already ({', '.join(active)})" if active else "another upload"
            raise AppError(
                ErrorCode.TRAINING_BUSY,
                f"Training is busy: {running} is under way; wait until it ends or cancel it.",
                headers={"Retry-After": "60"},
            )

    def submit(self, request: TrainingRequest, upload: BinaryIO) -> Job:
        check_training_request(request, self.settings, self.store)
        with self._lock:
            self._refuse_if_busy()
            job = Job(
                job_id=new_job_id(), kind=request.kind, model_name=request.model_name, base_model=request.base_model
            )
            reserved = _Run(job=job, data=TrainingData(request.kind, "xml", [], 0, 0), request=request)
            self._runs[job.job_id] = reserved
        job_dir = self.jobs.dir_of(job.job_id)
        try:
            job_dir.mkdir(parents=True)
            limits = ArchiveLimits(self.settings.training_max_entries, self.settings.training_max_unpacked_bytes)
            extract_training_zip(upload, job_dir / DATA_DIR, limits)
            reserved.data = scan_training_data(job_dir / DATA_DIR, request.kind)
            job.epochs = request.epochs or self.settings.training_default_epochs
            job.info.append(
                f"{reserved.data.lines} lines on {reserved.data.pages} pages"
                if reserved.data.data_format == "xml"
                else f"{reserved.data.lines} line images"
            )
            self.jobs.save(job)
        except BaseException:
            with self._lock:
                self._runs.pop(job.job_id, None)
            shutil.rmtree(job_dir, ignore_errors=True)
            raise
        thread = threading.Thread(
            target=self._supervise, args=(reserved,), name=f"training-{job.job_id[:8]}", daemon=True
        )
        reserved.thread = thread
        thread.start()
        log.info("training job %s queued: %s model '%s'", job.job_id, request.kind, request.model_name)
        return Job.from_json(job.to_json())

    # --- cancelling ------------------------------------------------------------------------
    def cancel(self, job_id: str) -> Job:
        with self._lock:
            run = self._runs.get(job_id)
            if run is not None and not run.installing:
                run.cancel.set()
                process = run.process
            elif run is not None:
                raise AppError(
                    ErrorCode.JOB_FINISHED, "The job is installing its model and can no longer be cancelled."
                )
        if run is None:
            job = self.get(job_id)
            raise AppError(ErrorCode.JOB_FINISHED, f"The job has ended already ({job.status.value}).")
        if process is not None:
            kill_group(process)
        if run.thread is not None:
            run.thread.join(timeout=KILL_WAIT_S + 10)
        return self.get(job_id)

    # --- the supervisor ----------------------------------------------------------------------
    def _supervise(self, run: _Run) -> None:
        job = run.job
        job_dir = self.jobs.dir_of(job.job_id)
        try:
            plan = self._plan(run, job_dir)
            if not run.cancel.is_set():
                self._run_trainer(run, plan, job_dir)
            if not job.status.finished:
                self._finish_cancelled(run)
        except JobFailedError as exc:
            self._finish(job, JobStatus.FAILED, exc.message)
        except Exception as exc:
            # The last line of defence: whatever went wrong, the job must not stay RUNNING.
            log.exception("training job %s failed inside the service", job.job_id)
            self._finish(job, JobStatus.FAILED, f"the training service failed: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._runs.pop(job.job_id, None)

    def _finish_cancelled(self, run: _Run) -> None:
        if run.stopping:
            self._finish(run.job, JobStatus.FAILED, run.stopping)
        else:
            self._finish(run.job, JobStatus.CANCELLED, "cancelled by an admin")

    def _plan(self, run: _Run, job_dir: Path) -> TrainingPlan:
        job, request, data = run.job, run.request, run.data
        base = self._bases.choose(request, data)
        for note in base.notes:
            log.info("training job %s: %s", job.job_id, note)
        job.info.extend(base.notes)
        run.base_alphabet_size = base.alphabet_size
        plan = TrainingPlan(
            kind=request.kind,
            data_format=data.data_format,
            training_files=[str(p) for p in data.files],
            output_dir=str(job_dir / runner.OUTPUT_DIR),
            epochs=job.epochs,
            threads=self.settings.training_thread_count,
            base_model=str(base.path) if base.path else None,
            spec=request.spec,
            learning_rate=request.learning_rate,
            # Recognition without an explicit epoch count stops when accuracy stops improving.
            early_stopping=request.kind == "recognition" and request.epochs is None,
            check_images=[str(p) for p in data.page_images],
            device=self.settings.device,
        )
        if request.kind == "segmentation" and base.path is None and plan.spec is None:
            plan.spec = SEGMENTATION_SPEC.format(height=self.settings.segtrain_height)
        job.base_model = base.name
        self._save(job)
        with open(job_dir / runner.PLAN_FILE, "w", encoding="utf-8") as handle:
            json.dump(plan.to_json(), handle, ensure_ascii=False, indent=1)
        return plan

    def _run_trainer(self, run: _Run, plan: TrainingPlan, job_dir: Path) -> None:
        job = run.job
        with open(job_dir / LOG_FILE, "ab") as log_file:
            with self._lock:
                if run.cancel.is_set():
                    return
                run.process = start_trainer(self._command(job_dir), job_dir, log_file, plan.threads)
                job.status = JobStatus.RUNNING
                job.started = now_iso()
                job.trainer_pid = run.process.pid
            self._save(job)
        watchdog = Watchdog(self.settings.training_stall_timeout_s, self._clock)
        reader = ProgressReader(job_dir / runner.PROGRESS_FILE)
        ending = watch_trainer(
            run.process, reader, watchdog, run.cancel, lambda events: self._apply(run, events), self._poll_s
        )
        if ending is Ending.STALLED:
            self._finish(
                job,
                JobStatus.FAILED,
                f"the trainer stopped reporting progress for more than {watchdog.timeout_s:g} s and was stopped",
            )
        elif ending is Ending.EXITED:
            self._conclude(run, run.process.returncode, job_dir)

    def _apply(self, run: _Run, events: list[dict[str, Any]]) -> None:
        job = run.job
        changed = False
        for event in events:
            report = epoch_report(event, job.epoch + 1)
            if report is None:
                continue
            with self._lock:
                job.metrics.append(report.metrics)
                job.epoch = report.metrics.epoch
            run.nan_loss = run.nan_loss or report.nan_loss
            changed = True
        if changed:
            self._save(job)

    def _conclude(self, run: _Run, returncode: int, job_dir: Path) -> None:
        job = run.job
        if returncode != 0:
            result = read_result(job_dir / runner.RESULT_FILE)
            self._finish(job, JobStatus.FAILED, exit_reason(returncode, result, last_line(job_dir / LOG_FILE)))
            return

        def claim() -> bool:
            with self._lock:
                if run.cancel.is_set():
                    return False
                run.installing = True
                return True

        outcome = self._installer.conclude(job, job_dir, run.nan_loss, run.base_alphabet_size, claim)
        if outcome.error is not None:
            self._finish(job, JobStatus.FAILED, outcome.error)
        elif outcome.installed:
            self._finish(job, JobStatus.DONE, None)

    # --- state ---------------------------------------------------------------------------------
    def _save(self, job: Job) -> None:
        with self._lock:
            snapshot = Job.from_json(job.to_json())
        self.jobs.save(snapshot)

    def _finish(self, job: Job, status: JobStatus, error: str | None) -> None:
        """Publish the job's final state; its trainer is stopped, its working files removed and its slot
        freed first, so a client that sees the final state can start the next job at once."""
        with self._lock:
            run = self._runs.get(job.job_id)
        if run is not None and run.process is not None and run.process.poll() is None:
            kill_group(run.process)
        job_dir = self.jobs.dir_of(job.job_id)
        for heavy in (job_dir / DATA_DIR, job_dir / runner.OUTPUT_DIR):
            shutil.rmtree(heavy, ignore_errors=True)
        (job_dir / runner.MODEL_FILE).unlink(missing_ok=True)
        with self._lock:
            job.status = status
            job.error = error
            job.finished = now_iso()
        self._save(job)
        with self._lock:
            self._runs.pop(job.job_id, None)
        self.jobs.prune(self.settings.training_keep_jobs)
        level = logging.INFO if status == JobStatus.DONE else logging.WARNING
        log.log(level, "training job %s %s%s", job.job_id, status.value, f": {error}" if error else "")
