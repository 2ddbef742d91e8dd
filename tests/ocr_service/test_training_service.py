"""The training service's supervision with stand-in trainer processes (no kraken, seconds each).

Each stand-in is a real child process doing what a trainer can do: learn, learn nothing,
write a broken model, crash, die of SIGKILL (as the OOM killer does) or hang.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ocr_service.engine.inspect import ModelFacts
from ocr_service.engine.validate import model_checker
from ocr_service.errors import AppError, ErrorCode
from ocr_service.store import ModelStore
from ocr_service.training.jobs import Job, JobStatus, JobStore
from ocr_service.training.service import TrainingRequest, TrainingService
from tests.conftest import make_settings
from tests.support.training_data import line_set, make_zip, page_set

STAND_IN = r"""
import json, os, shutil, signal, sys, time
job, mode, model_source = sys.argv[1], sys.argv[2], sys.argv[3]
def emit(event):
    with open(os.path.join(job, "progress.jsonl"), "a") as f:
        f.write(json.dumps(event) + "\n")
emit({"type": "started", "pid": os.getpid()})
if mode == "crash":
    print("RuntimeError: the stand-in trainer broke", file=sys.stderr)
    sys.exit(1)
if mode == "oom":
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "hang":
    time.sleep(600)
score = 0.0 if mode == "zero" else 0.8
emit({"type": "epoch", "epoch": 1, "score": score, "loss": 0.5})
model = os.path.join(job, "model.safetensors")
if mode == "garbage":
    with open(model, "wb") as f:
        f.write(b"this is not a model")
else:
    shutil.copyfile(model_source, model)
with open(os.path.join(job, "result.json"), "w") as f:
    json.dump({"error": None, "modelFile": model, "bestScore": score, "bestEpoch": 1}, f)
"""

RECOGNITION = ModelFacts(kind="recognition", line_type="bbox", alphabet="abc", input_height=32)
DATA = make_zip(line_set(10))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    """What the stand-in trainer "trains"; the service's validator is faked where it must pass."""
    path = tmp_path / "source" / "trained.safetensors"
    path.parent.mkdir()
    path.write_bytes(b"weights of a model the stand-in trainer pretends to have trained")
    return path


def stand_in(mode: str, model: Path) -> Callable[[Path], list[str]]:
    return lambda job_dir: [sys.executable, "-c", STAND_IN, str(job_dir), mode, str(model)]


def make_service(
    tmp_path: Path,
    mode: str,
    model: Path,
    *,
    validate: Callable[[Path], ModelFacts] | None = None,
    clock: FakeClock | None = None,
    **overrides: object,
) -> TrainingService:
    settings = make_settings(tmp_path / "models", training_dir=tmp_path / "training", **overrides)
    store = ModelStore(settings.models_dir)
    return TrainingService(
        settings,
        store,
        trainer_command=stand_in(mode, model),
        clock=clock or time.monotonic,
        poll_interval_s=0.05,
        validate=validate or (lambda path: RECOGNITION),
    )


def wait_finished(service: TrainingService, job_id: str, bound_s: float = 120) -> Job:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        job = service.get(job_id)
        if job.status.finished:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {service.get(job_id).public()}")


def wait_running(service: TrainingService, job_id: str) -> None:
    deadline = time.monotonic() + 60
    while service.get(job_id).status != JobStatus.RUNNING:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.02)


def submit(service: TrainingService, name: str = "writer-anna", **kwargs: object) -> Job:
    return service.submit(TrainingRequest(kind="recognition", model_name=name, **kwargs), io.BytesIO(DATA))  # type: ignore[arg-type]


def test_a_run_that_learned_installs_its_model(tmp_path: Path, model_file: Path) -> None:
    service = make_service(tmp_path, "learn", model_file)
    job = wait_finished(service, submit(service).job_id)
    assert job.status == JobStatus.DONE, job.error
    assert (job.accuracy, job.cer, job.model_version) == (0.8, 0.2, 1)
    assert service.store.file_of("writer-anna") is not None
    entry = service.store.entry("writer-anna")
    assert (entry.source, entry.accuracy, entry.cer) == ("trained", 0.8, 0.2)
    # once the job has let go of its models, the heavy working files are gone; state and log stay
    deadline = time.monotonic() + 30
    while service.models_in_use():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    job_dir = service.jobs.dir_of(job.job_id)
    assert not (job_dir / "data").exists() and not (job_dir / "model.safetensors").exists()
    assert (job_dir / "job.json").exists()


def test_a_segmentation_run_starts_from_the_segmentation_model_ocr_uses(tmp_path: Path, model_file: Path) -> None:
    seg_facts = ModelFacts(kind="segmentation", line_type=None, alphabet=None, input_height=800)
    service = make_service(tmp_path, "learn", model_file, validate=lambda path: seg_facts)
    service.store.install(model_file, "house-seg", seg_facts, source="trained", replace=False)
    pages = make_zip(page_set(2))
    # nothing chosen: the packaged 1800-px model cannot be fine-tuned at 800 px
    request = TrainingRequest(kind="segmentation", model_name="seg-first")
    first = wait_finished(service, service.submit(request, io.BytesIO(pages)).job_id)
    assert first.base_model is None
    assert any("'blla' reads pages at 1800 px" in note for note in first.info), first.info
    # once an 800-px model is the one /ocr uses, later runs under a new name start from it
    service.store.set_segmentation("house-seg")
    request = TrainingRequest(kind="segmentation", model_name="seg-second")
    second = wait_finished(service, service.submit(request, io.BytesIO(pages)).job_id)
    assert second.base_model == "house-seg"
    assert any("Fine-tuning segmentation model 'house-seg' (800 px)" in note for note in second.info), second.info


def test_each_run_backs_up_the_previous_version_keeping_three(tmp_path: Path, model_file: Path) -> None:
    service = make_service(tmp_path, "learn", model_file)
    for version in range(1, 6):
        job = wait_finished(service, submit(service).job_id)
        assert (job.status, job.model_version) == (JobStatus.DONE, version)
    assert len(service.store.backups("writer-anna")) == 3
    assert service.store.entry("writer-anna").version == 5


def test_a_run_that_learned_nothing_installs_nothing(tmp_path: Path, model_file: Path) -> None:
    service = make_service(tmp_path, "zero", model_file)
    job = wait_finished(service, submit(service).job_id)
    assert job.status == JobStatus.FAILED
    assert job.error is not None and "did not converge" in job.error
    assert service.store.file_of("writer-anna") is None


def test_a_model_that_fails_to_load_is_never_installed(tmp_path: Path, model_file: Path) -> None:
    service = make_service(tmp_path, "garbage", model_file, validate=model_checker(make_settings(tmp_path / "models")))
    job = wait_finished(service, submit(service).job_id)
    assert job.status == JobStatus.FAILED
    assert job.error is not None and "cannot be loaded" in job.error
    assert service.store.names() == []


def test_a_failed_run_leaves_the_installed_model_alone(tmp_path: Path, model_file: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(model_file, models / "writer-anna.safetensors")
    before = (models / "writer-anna.safetensors").read_bytes()
    service = make_service(tmp_path, "garbage", model_file, validate=model_checker(make_settings(tmp_path / "models")))
    job = wait_finished(service, submit(service).job_id)
    assert job.status == JobStatus.FAILED
    assert (models / "writer-anna.safetensors").read_bytes() == before
    assert service.store.backups("writer-anna") == []


def test_a_crashing_trainer_fails_the_job_with_its_reason(tmp_path: Path, model_file: Path) -> None:
    service = make_service(tmp_path, "crash", model_file)
    job = wait_finished(service, submit(service).job_id)
    assert job.status == JobStatus.FAILED
    assert job.error is not None and "exit code 1" in job.error and "stand-in trainer broke" in job.error


def test_a_trainer_killed_like_by_the_oom_killer_fails_the_job(tmp_path: Path, model_file: Path) -> None:
    service = make_service(tmp_path, "oom", model_file)
    job = wait_finished(service, submit(service).job_id)
    assert job.status == JobStatus.FAILED
    assert job.error is not None and "SIGKILL" in job.error and "memory" in job.error


def test_the_watchdog_kills_a_trainer_that_stopped_reporting(tmp_path: Path, model_file: Path) -> None:
    clock = FakeClock()
    service = make_service(tmp_path, "hang", model_file, clock=clock, training_stall_timeout_s=300)
    job_id = submit(service).job_id
    wait_running(service, job_id)
    pid = service.get(job_id).trainer_pid
    assert pid is not None
    time.sleep(0.3)  # the stand-in's "started" line has been read; now it says nothing more
    clock.advance(301)
    job = wait_finished(service, job_id)
    assert job.status == JobStatus.FAILED
    assert job.error is not None and "stopped reporting" in job.error
    assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return False


def test_a_running_job_can_be_cancelled(tmp_path: Path, model_file: Path) -> None:
    service = make_service(tmp_path, "hang", model_file)
    job_id = submit(service).job_id
    wait_running(service, job_id)
    pid = service.get(job_id).trainer_pid
    assert pid is not None
    job = service.cancel(job_id)
    assert job.status == JobStatus.CANCELLED
    assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    assert service.store.names() == []
    with pytest.raises(AppError) as caught:
        service.cancel(job_id)
    assert caught.value.code == ErrorCode.JOB_FINISHED


def test_a_second_job_while_one_runs_is_refused(tmp_path: Path, model_file: Path) -> None:
    service = make_service(tmp_path, "hang", model_file)
    first = submit(service)
    with pytest.raises(AppError) as caught:
        submit(service, name="writer-bert")
    assert caught.value.code == ErrorCode.TRAINING_BUSY
    assert service.models_in_use() == {"writer-anna"}
    service.cancel(first.job_id)
    assert service.models_in_use() == set()


def test_the_number_of_jobs_at_once_is_configurable(tmp_path: Path, model_file: Path) -> None:
    service = make_service(tmp_path, "hang", model_file, training_max_jobs=2)
    first, second = submit(service), submit(service, name="writer-bert")
    with pytest.raises(AppError):
        submit(service, name="writer-carl")
    service.shutdown()
    for job_id in (first.job_id, second.job_id):
        job = service.get(job_id)
        assert job.status == JobStatus.FAILED and job.error is not None and "interrupted" in job.error


def test_jobs_left_running_by_a_previous_process_are_reported_failed(tmp_path: Path, model_file: Path) -> None:
    jobs = JobStore(tmp_path / "training")
    left = Job(job_id="b" * 32, kind="segmentation", model_name="seg", base_model=None, status=JobStatus.RUNNING)
    queued = Job(job_id="c" * 32, kind="recognition", model_name="rec", base_model=None)
    done = Job(job_id="d" * 32, kind="recognition", model_name="rec", base_model=None, status=JobStatus.DONE)
    for job in (left, queued, done):
        jobs.save(job)
    service = make_service(tmp_path, "learn", model_file)
    service.start()
    for job_id in (left.job_id, queued.job_id):
        job = service.get(job_id)
        assert job.status == JobStatus.FAILED and job.error is not None and "interrupted" in job.error
    assert service.get(done.job_id).status == JobStatus.DONE


def test_only_the_newest_finished_jobs_are_kept(tmp_path: Path, model_file: Path) -> None:
    jobs = JobStore(tmp_path / "training")
    running = Job(job_id="a" * 32, kind="recognition", model_name="rec", base_model=None, status=JobStatus.RUNNING)
    jobs.save(running)
    old = [
        Job(
            job_id=c * 32,
            kind="recognition",
            model_name="rec",
            base_model=None,
            status=JobStatus.DONE,
            created=f"2026-01-0{day}T00:00:00+00:00",
        )
        for day, c in enumerate("bcd", start=1)
    ]
    for job in old:
        jobs.save(job)
    assert jobs.prune(keep=2) == [old[0].job_id]  # the oldest finished job goes, the running one stays
    assert {j.job_id for j in jobs.all()} == {running.job_id, old[1].job_id, old[2].job_id}
    # a folder an upload cut off by a crash left without state: deleted once it is a day old
    cut_off, fresh = tmp_path / "training" / ("e" * 32), tmp_path / "training" / ("f" * 32)
    for folder in (cut_off, fresh):
        (folder / "data").mkdir(parents=True)
    day_old = time.time() - 2 * 24 * 3600
    os.utime(cut_off, (day_old, day_old))
    outside = tmp_path / "precious"
    outside.mkdir()
    (tmp_path / "training" / ("9" * 32)).symlink_to(outside)
    assert jobs.prune(keep=2) == [cut_off.name]
    assert fresh.exists() and outside.exists()

    # the service keeps OCR_TRAINING_KEEP_JOBS: at start, and whenever a job ends
    service = make_service(tmp_path, "learn", model_file, training_keep_jobs=2)
    service.start()  # the leftover RUNNING job is now a finished (interrupted) one: one too many
    assert len(service.jobs.all()) == 2
    latest = [wait_finished(service, submit(service).job_id) for _ in range(2)]
    # The job's final state is published first, then the history pruned (a moment later).
    kept = {j.job_id for j in latest}
    deadline = time.monotonic() + 30  # a guard, not a timing
    while {j.job_id for j in service.jobs.all()} != kept and time.monotonic() < deadline:
        time.sleep(0.01)
    assert {j.job_id for j in service.jobs.all()} == kept
    with pytest.raises(AppError) as gone:
        service.get(old[2].job_id)
    assert gone.value.code == ErrorCode.JOB_NOT_FOUND
    assert not (tmp_path / "training" / old[2].job_id).exists()


@pytest.mark.parametrize(
    ("request_kwargs", "code"),
    [
        ({"model_name": "Bad Name"}, ErrorCode.INVALID_MODEL_NAME),
        ({"model_name": "blla"}, ErrorCode.MODEL_PROTECTED),
        ({"base_model": "../../etc/passwd"}, ErrorCode.INVALID_MODEL_NAME),
        ({"base_model": "nobody"}, ErrorCode.UNKNOWN_MODEL),
        ({"base_model": "blla"}, ErrorCode.WRONG_MODEL_KIND),
        ({"epochs": 0}, ErrorCode.INVALID_REQUEST),
        ({"epochs": 100_000}, ErrorCode.INVALID_REQUEST),
        ({"spec": "import os"}, ErrorCode.INVALID_REQUEST),
        ({"learning_rate": 5.0}, ErrorCode.INVALID_REQUEST),
    ],
)
def test_bad_requests_are_refused_before_anything_is_unpacked(
    tmp_path: Path, model_file: Path, request_kwargs: dict[str, object], code: ErrorCode
) -> None:
    service = make_service(tmp_path, "learn", model_file)
    values: dict[str, object] = {"kind": "recognition", "model_name": "writer-anna", **request_kwargs}
    with pytest.raises(AppError) as caught:
        service.submit(TrainingRequest(**values), io.BytesIO(DATA))  # type: ignore[arg-type]
    assert caught.value.code == code
    assert os.listdir(tmp_path / "training") == []


@pytest.mark.parametrize("max_jobs", [1, 2, 3])
def test_uploads_under_way_count_like_running_jobs(tmp_path: Path, model_file: Path, max_jobs: int) -> None:
    """Many uploads at once: only as many as may run get a place; the others are refused
    before they spool a byte, and a place comes back when its upload ends."""
    service = make_service(tmp_path, "hang", model_file, training_max_jobs=max_jobs)
    rng = random.Random(max_jobs)
    outcomes: list[str] = []
    holding = threading.Barrier(max_jobs + 1)
    release = threading.Event()

    def upload() -> None:
        try:
            with service.upload_slot():
                outcomes.append("placed")
                holding.wait(30)
                release.wait(30)
        except AppError as refused:
            outcomes.append(refused.code)

    callers = [threading.Thread(target=upload) for _ in range(max_jobs + rng.randint(1, 6))]
    for caller in callers:
        caller.start()
    holding.wait(30)  # every place is taken and held; the other callers are refused meanwhile
    deadline = time.monotonic() + 30  # a guard, not a timing
    while len(outcomes) < len(callers) and time.monotonic() < deadline:
        time.sleep(0.01)
    refused = len(callers) - max_jobs
    assert sorted(outcomes) == sorted(["placed"] * max_jobs + [ErrorCode.TRAINING_BUSY] * refused)
    release.set()
    for caller in callers:
        caller.join(30)
    with service.upload_slot():  # all places came back
        pass


def test_an_upload_in_progress_does_not_refuse_its_own_submission(tmp_path: Path, model_file: Path) -> None:
    service = make_service(tmp_path, "hang", model_file)
    with service.upload_slot():
        job = submit(service)
    with pytest.raises(AppError) as caught, service.upload_slot():
        pass
    assert caught.value.code == ErrorCode.TRAINING_BUSY
    service.cancel(job.job_id)
