"""The training side of the OCR service: accept a job, run its trainer process, install the result.

A job goes QUEUED → RUNNING → DONE | FAILED | CANCELLED. Each runs in its own trainer
process (see :mod:`ocr_service.training.runner` for why), watched by one supervisor thread
here that tails the trainer's progress file, enforces the watchdog and cancellation, and at
the end judges the run, validates the model in a child process and installs it atomically.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ocr_service.engine.inspect import ModelFacts, ModelFileError
from ocr_service.engine.pipeline import packaged_segmentation_model
from ocr_service.engine.train import SEGMENTATION_SPEC, TrainingPlan, spec_input_height
from ocr_service.engine.validate import model_checker
from ocr_service.errors import AppError, ErrorCode
from ocr_service.settings import Settings
from ocr_service.store import PACKAGED_SEGMENTATION, ModelStore, check_model_name
from ocr_service.training import runner
from ocr_service.training.archive import ArchiveLimits, extract_training_zip
from ocr_service.training.datasets import FEW_LINES, TrainingData, TrainingKind, scan_training_data
from ocr_service.training.jobs import EpochMetrics, Job, JobStatus, JobStore, new_job_id, now_iso
from ocr_service.training.watchdog import Watchdog

log = logging.getLogger(__name__)

DATA_DIR = "data"
LOG_FILE = "trainer.log"
_SPEC = re.compile(r"^\[[0-9A-Za-z,.()\s\-]+\]$")
MAX_SPEC_CHARS = 1000
MIN_LEARNING_RATE = 1e-7
MAX_LEARNING_RATE = 1.0
_KILL_WAIT_S = 30.0

TrainerCommand = Callable[[Path], list[str]]
Clock = Callable[[], float]


def default_trainer_command(job_dir: Path, log_level: str) -> list[str]:
    return [sys.executable, "-m", "ocr_service.training.runner", "--log-level", log_level, str(job_dir)]


@dataclass(frozen=True)
class TrainingRequest:
    kind: TrainingKind
    model_name: str
    base_model: str | None = None
    epochs: int | None = None
    spec: str | None = None
    learning_rate: float | None = None


@dataclass(frozen=True)
class BaseDecision:
    """Which model a run starts from (None: from scratch) and what the admin is told about it."""

    name: str | None
    path: Path | None
    note: str


def choose_segmentation_base(
    candidate: tuple[str, Path] | None,
    training_height: int,
    height_of: Callable[[str, Path], int | None],
) -> BaseDecision:
    """Fine-tune ``candidate`` only if its input height is the training height.

    kraken silently ignores ``-s``/the spec when weights are loaded, so a base model of
    another height (blla: 1800 px) cannot be trained at ``training_height``: such a run
    starts from scratch at that height instead, and says so.
    """
    scratch = f"training a new segmentation model from scratch at {training_height} px"
    if candidate is None:
        return BaseDecision(None, None, f"No segmentation base model: {scratch}.")
    name, path = candidate
    try:
        height = height_of(name, path)
    except (ModelFileError, AppError, OSError) as exc:
        log.warning("the input height of segmentation model '%s' cannot be read (%s); %s", name, exc, scratch)
        return BaseDecision(
            None, None, f"The input height of base model '{name}' could not be read ({exc}); {scratch}."
        )
    if height is None:
        log.warning("segmentation model '%s' declares no input height; %s", name, scratch)
        return BaseDecision(None, None, f"Base model '{name}' declares no input height; {scratch}.")
    if height != training_height:
        return BaseDecision(
            None,
            None,
            f"Base model '{name}' reads pages at {height} px, but segmentation is trained at {training_height} px "
            f"and kraken cannot change a loaded model's input height: {scratch}.",
        )
    return BaseDecision(name, path, f"Fine-tuning segmentation model '{name}' ({height} px).")


def convergence_problem(kind: str, metrics: list[EpochMetrics], nan_loss: bool, result: dict[str, Any]) -> str | None:
    """Why a finished run has learned nothing usable, or None if its model may be installed."""
    if nan_loss:
        return "the training loss became NaN"
    score = result.get("bestScore")
    if score is None:
        return "no checkpoint with a validation score was written"
    scores = [m.accuracy for m in metrics if m.accuracy is not None] + [float(score)]
    if max(scores) <= 0.0:
        return "the validation accuracy stayed at 0"
    if kind == "segmentation" and not result.get("linesFound"):
        pages = result.get("pagesChecked", 0)
        return f"the trained model finds no lines on {pages} training page(s)"
    return None


def _exit_reason(returncode: int, result: dict[str, Any] | None, log_tail: str) -> str:
    if returncode < 0:
        sig = -returncode
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        if sig == signal.SIGKILL:
            return f"the trainer process was killed ({name}), most likely because it ran out of memory"
        return f"the trainer process was killed by signal {name}"
    if returncode == runner.EXIT_DATA_ERROR and result and result.get("error"):
        return f"training stopped: {result['error']}"
    tail = f": {log_tail}" if log_tail else ""
    return f"the trainer process crashed (exit code {returncode}){tail}"


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 4096))
            lines = [ln.strip() for ln in handle.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


class _ProgressReader:
    """Reads the complete lines a trainer has appended to its progress file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                log.warning("ignoring a malformed progress line from the trainer: %r", line[:200])
                continue
            if isinstance(event, dict):
                events.append(event)
        return events


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
        # Child processes get their settings as arguments, never by reading OCR_* themselves.
        self._command = trainer_command or functools.partial(default_trainer_command, log_level=settings.log_level)
        self._clock = clock
        self._poll_s = poll_interval_s
        self._validate = validate or model_checker(settings)
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}

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
        # The trainer runs in its own session, so it can outlive a crashed service.
        # Only a process whose command line names this job's folder is ours to kill.
        pid = job.trainer_pid
        assert pid is not None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\x00")
        except OSError:
            return
        if str(self.jobs.dir_of(job.job_id)).encode() in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            log.warning("killed trainer process %d left over from job %s", pid, job.job_id)

    def shutdown(self) -> None:
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            run.stopping = "interrupted: the OCR service stopped while this job ran"
            run.cancel.set()
        for run in runs:
            if run.thread is not None:
                run.thread.join(timeout=_KILL_WAIT_S + 10)

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
    def _check_request(self, request: TrainingRequest) -> None:
        check_model_name(request.model_name)
        if request.model_name == PACKAGED_SEGMENTATION:
            raise AppError(
                ErrorCode.INVALID_MODEL_NAME, f"'{PACKAGED_SEGMENTATION}' is the packaged model's name; choose another."
            )
        if request.epochs is not None and not 1 <= request.epochs <= self.settings.training_max_epochs:
            raise AppError(
                ErrorCode.INVALID_REQUEST, f"epochs must lie between 1 and {self.settings.training_max_epochs}."
            )
        if request.learning_rate is not None and not MIN_LEARNING_RATE <= request.learning_rate <= MAX_LEARNING_RATE:
            raise AppError(
                ErrorCode.INVALID_REQUEST,
                f"learningRate must lie between {MIN_LEARNING_RATE:g} and {MAX_LEARNING_RATE:g}.",
            )
        if request.spec is not None:
            if len(request.spec) > MAX_SPEC_CHARS or not _SPEC.match(request.spec):
                raise AppError(
                    ErrorCode.INVALID_REQUEST,
                    "spec must be a bracketed VGSL network description, e.g. '[1,48,0,1 ...]'.",
                )
            if request.base_model is not None:
                # kraken ignores the spec when it loads weights; refusing says so instead of silently ignoring it.
                raise AppError(
                    ErrorCode.INVALID_REQUEST,
                    "spec describes a new network; it cannot go with baseModel (a loaded model keeps its own).",
                )
            if request.kind == "segmentation" and spec_input_height(request.spec) != self.settings.segtrain_height:
                raise AppError(
                    ErrorCode.INVALID_REQUEST,
                    f"A segmentation spec must declare the training height {self.settings.segtrain_height} px "
                    "as its input height ('[1,H,0,3 ...]').",
                )
        if request.base_model is not None:
            check_model_name(request.base_model)
            if request.base_model == PACKAGED_SEGMENTATION:
                if request.kind != "segmentation":
                    raise AppError(ErrorCode.WRONG_MODEL_KIND, f"'{PACKAGED_SEGMENTATION}' is a segmentation model.")
            elif self.store.file_of(request.base_model) is None:
                raise AppError(
                    ErrorCode.UNKNOWN_MODEL,
                    f"There is no model named '{request.base_model}' to start from. "
                    f"Installed: {', '.join(self.store.names()) or 'none'}.",
                )
            else:
                kind = self.store.entry(request.base_model).kind
                if kind is not None and kind != request.kind:
                    raise AppError(
                        ErrorCode.WRONG_MODEL_KIND,
                        f"'{request.base_model}' is a {kind} model; a {request.kind} run needs a {request.kind} model.",
                    )
        if self.store.file_of(request.model_name) is not None:
            kind = self.store.entry(request.model_name).kind
            if kind is not None and kind != request.kind:
                raise AppError(
                    ErrorCode.WRONG_MODEL_KIND,
                    f"'{request.model_name}' is a {kind} model; choose another name for a {request.kind} model.",
                )

    def check_capacity(self) -> None:
        """Raise TRAINING_BUSY if no job may start now: called before an upload is read."""
        with self._lock:
            self._refuse_if_busy()

    def _refuse_if_busy(self) -> None:
        # The caller holds self._lock. A run whose job has its final state is only tidying up.
        active = sorted(job_id for job_id, run in self._runs.items() if not run.job.status.finished)
        if len(active) >= self.settings.training_max_jobs:
            raise AppError(
                ErrorCode.TRAINING_BUSY,
                f"A training job is running already ({', '.join(active)}); wait until it ends or cancel it.",
                headers={"Retry-After": "60"},
            )

    def submit(self, request: TrainingRequest, upload: BinaryIO) -> Job:
        self._check_request(request)
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
            _kill_group(process)
        if run.thread is not None:
            run.thread.join(timeout=_KILL_WAIT_S + 10)
        return self.get(job_id)

    # --- the supervisor ----------------------------------------------------------------------
    def _supervise(self, run: _Run) -> None:
        job = run.job
        job_dir = self.jobs.dir_of(job.job_id)
        try:
            plan = self._plan(run, job_dir)
            if plan is not None and not run.cancel.is_set():
                self._run_trainer(run, plan, job_dir)
            if not job.status.finished:
                self._finish_cancelled(run)
        except _JobFailedError as exc:
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

    def _plan(self, run: _Run, job_dir: Path) -> TrainingPlan | None:
        job, request, data = run.job, run.request, run.data
        base_name, base_path = self._choose_base(run)
        plan = TrainingPlan(
            kind=request.kind,
            data_format=data.data_format,
            training_files=[str(p) for p in data.files],
            output_dir=str(job_dir / runner.OUTPUT_DIR),
            epochs=job.epochs,
            threads=self.settings.training_thread_count,
            base_model=str(base_path) if base_path else None,
            spec=request.spec,
            learning_rate=request.learning_rate,
            # Recognition without an explicit epoch count stops when accuracy stops improving.
            early_stopping=request.kind == "recognition" and request.epochs is None,
            check_images=[str(p) for p in data.page_images],
        )
        if request.kind == "segmentation" and base_path is None and plan.spec is None:
            plan.spec = SEGMENTATION_SPEC.format(height=self.settings.segtrain_height)
        job.base_model = base_name
        self._save(job)
        with open(job_dir / runner.PLAN_FILE, "w", encoding="utf-8") as handle:
            json.dump(plan.to_json(), handle, ensure_ascii=False, indent=1)
        return plan

    def _choose_base(self, run: _Run) -> tuple[str | None, Path | None]:
        job, request, data = run.job, run.request, run.data
        if request.kind == "segmentation":
            decision = choose_segmentation_base(
                None if request.spec else self._segmentation_candidate(request),
                self.settings.segtrain_height,
                self._input_height,
            )
            job.info.append(decision.note)
            log.info("training job %s: %s", job.job_id, decision.note)
            return decision.name, decision.path
        name = request.base_model
        if name is None and not request.spec and self.store.file_of(request.model_name) is not None:
            name = request.model_name
            job.info.append(f"Continuing training of the installed model '{name}'.")
        if name is None:
            job.info.append("Training a new recognition model from scratch.")
            if data.lines < FEW_LINES:
                job.info.append(
                    f"Only {data.lines} lines: a model trained from scratch on few lines reads poorly; "
                    "fine-tuning a base model (baseModel) usually works much better."
                )
            return None, None
        path = self.store.file_of(name)
        assert path is not None
        entry = self.store.entry(name)
        if entry.kind is not None and entry.kind != "recognition":
            raise _JobFailedError(f"'{name}' is a {entry.kind} model, not a recognition model")
        if entry.line_type is not None and entry.line_type != data.line_type:
            raise _JobFailedError(
                f"base model '{name}' reads {entry.line_type} lines but the data has {data.line_type} lines "
                "(line images are bbox lines, PAGE XML/ALTO lines are baselines); a model trained on mixed line "
                "types reads neither well"
            )
        run.base_alphabet_size = entry.alphabet_size
        if name != request.model_name or request.base_model:
            job.info.append(f"Fine-tuning recognition model '{name}'; new characters grow its alphabet.")
        return name, path

    def _segmentation_candidate(self, request: TrainingRequest) -> tuple[str, Path] | None:
        """The base of a segmentation run: the named one, else the target itself, else the one /ocr uses."""
        if request.base_model is not None:
            return request.base_model, self._segmentation_file(request.base_model)
        existing = self.store.file_of(request.model_name)
        if existing is not None:
            return request.model_name, existing
        current = self.store.segmentation_model(check=False)
        return current.name, Path(current.path)

    def _segmentation_file(self, name: str) -> Path:
        path = self.store.file_of(name)
        if path is None and name == PACKAGED_SEGMENTATION:
            return packaged_segmentation_model()
        if path is None:
            raise _JobFailedError(f"the base model '{name}' is no longer in the store")
        return path

    def _input_height(self, name: str, path: Path) -> int | None:
        if name == PACKAGED_SEGMENTATION and path == packaged_segmentation_model():
            return self.store.entry(PACKAGED_SEGMENTATION).input_height
        if path.parent == self.store.root and self.store.file_of(path.stem) == path:
            entry = self.store.entry(path.stem)
            # The store records why a hand-placed file it inspected cannot be used.
            problem = getattr(entry, "problem", None)
            if problem:
                raise ModelFileError(str(problem))
            if entry.kind is not None and entry.kind != "segmentation":
                raise _JobFailedError(f"'{name}' is a {entry.kind} model, not a segmentation model")
            if entry.input_height is not None:
                return entry.input_height
        return self._validate(path).input_height

    def _run_trainer(self, run: _Run, plan: TrainingPlan, job_dir: Path) -> None:
        job = run.job
        env = dict(os.environ, OMP_NUM_THREADS=str(plan.threads))
        with open(job_dir / LOG_FILE, "ab") as log_file:
            with self._lock:
                if run.cancel.is_set():
                    return
                # Its own session: the trainer and anything it starts are killed together (killpg).
                run.process = subprocess.Popen(
                    self._command(job_dir),
                    cwd=job_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
                job.status = JobStatus.RUNNING
                job.started = now_iso()
                job.trainer_pid = run.process.pid
            self._save(job)
        process = run.process
        reader = _ProgressReader(job_dir / runner.PROGRESS_FILE)
        watchdog = Watchdog(self.settings.training_stall_timeout_s, self._clock)
        stalled = False
        while True:
            if self._apply(run, reader.read()):
                watchdog.beat()
            if run.cancel.is_set():
                _kill_group(process)
                return
            if process.poll() is not None:
                break
            if watchdog.stalled():
                stalled = True
                _kill_group(process)
                break
            time.sleep(self._poll_s)
        self._apply(run, reader.read())
        if stalled:
            self._finish(
                job,
                JobStatus.FAILED,
                f"the trainer stopped reporting progress for more than {watchdog.timeout_s:g} s and was stopped",
            )
            return
        if run.cancel.is_set():
            return
        self._conclude(run, process.returncode, job_dir)

    def _apply(self, run: _Run, events: list[dict[str, Any]]) -> bool:
        job = run.job
        changed = False
        for event in events:
            if event.get("type") == "epoch":
                score = event.get("score")
                accuracy = round(float(score), 6) if isinstance(score, (int, float)) else None
                loss = event.get("loss")
                metrics = EpochMetrics(
                    epoch=int(event.get("epoch", job.epoch + 1)),
                    accuracy=accuracy,
                    cer=None if accuracy is None else round(1.0 - accuracy, 6),
                    loss=float(loss) if isinstance(loss, (int, float)) else None,
                )
                with self._lock:
                    job.metrics.append(metrics)
                    job.epoch = metrics.epoch
                if event.get("nanLoss"):
                    run.nan_loss = True
                changed = True
        if changed:
            self._save(job)
        return bool(events)

    def _conclude(self, run: _Run, returncode: int, job_dir: Path) -> None:
        job = run.job
        result = _read_result(job_dir / runner.RESULT_FILE)
        if returncode != 0:
            self._finish(job, JobStatus.FAILED, _exit_reason(returncode, result, _last_line(job_dir / LOG_FILE)))
            return
        if result is None:
            self._finish(job, JobStatus.FAILED, "the trainer ended without a result")
            return
        problem = convergence_problem(job.kind, job.metrics, run.nan_loss, result)
        if problem is not None:
            self._finish(job, JobStatus.FAILED, f"did not converge: {problem}; no model was installed")
            return
        model_file = (job_dir / runner.MODEL_FILE).resolve()
        if Path(str(result.get("modelFile"))).resolve() != model_file or not model_file.is_file():
            self._finish(job, JobStatus.FAILED, "the trainer did not write the model file where it was expected")
            return
        try:
            facts = self._validate(model_file)
        except ModelFileError as exc:
            self._finish(job, JobStatus.FAILED, f"the trained model cannot be loaded and was not installed: {exc}")
            return
        if facts.kind != job.kind:
            self._finish(job, JobStatus.FAILED, f"the trainer produced a {facts.kind} model, not a {job.kind} model")
            return
        accuracy = float(result["bestScore"])
        with self._lock:
            if run.cancel.is_set():
                return
            run.installing = True
        if run.base_alphabet_size is not None and facts.alphabet_size is not None:
            grown = facts.alphabet_size - run.base_alphabet_size
            if grown > 0:
                job.info.append(f"The alphabet grew by {grown} character(s) to {facts.alphabet_size}.")
        entry = self.store.install(
            model_file,
            job.model_name,
            facts,
            source="trained",
            replace=True,
            scores={"accuracy": round(accuracy, 6), "cer": round(1.0 - accuracy, 6)},
            extra={
                "jobId": job.job_id,
                "baseModel": job.base_model,
                "epochs": job.epoch,
                "bestEpoch": result.get("bestEpoch"),
                "metrics": [{"epoch": m.epoch, "accuracy": m.accuracy} for m in job.metrics],
            },
        )
        job.accuracy = round(accuracy, 6)
        job.cer = round(1.0 - accuracy, 6)
        job.model_version = entry.version
        if result.get("bestEpoch"):
            job.info.append(f"Installed the checkpoint of epoch {result['bestEpoch']} (best validation score).")
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
            _kill_group(run.process)
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


class _JobFailedError(AppError):
    """A problem found after the job was accepted: it fails the job with this message."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.INVALID_TRAINING_DATA, message)


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("the trainer's result %s cannot be read: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the trainer and everything it started; its work is discarded, so no grace period."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=_KILL_WAIT_S)
