"""/train, /segtrain and the job routes over real HTTP, with real (tiny, short) kraken training."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ocr_service.settings import Settings
from ocr_service.store import ModelStore
from ocr_service.training.jobs import Job, JobStatus, JobStore
from tests.conftest import make_settings
from tests.support.servers import RunningApp
from tests.support.training_data import line_set, make_zip, page_set

TOKEN = "training-secret"
AUTH = {"X-Training-Token": TOKEN}
# Convolutions only: learns where lines lie on clean synthetic pages in one epoch at 256 px.
TINY_SEG_SPEC = "[1,256,0,3 Cr7,7,16,2,2 Gn8 Cr3,3,32,2,2 Gn8 Cr3,3,32 Gn8 Cr3,3,32 Gn8]"
# Characters the tiny model has never seen: the base's alphabet must grow (--resize union).
NEW_CHARACTER_LINES = ["Größe 1917", "Grüße aus Köln 1918", "Äpfel Öl Übermut 42"]

ServiceFactory = Callable[..., RunningApp]


def training_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "training_dir": tmp_path / "training",
        "training_token": TOKEN,
        "training_threads": 2,
        "workers": 1,
        "segtrain_height": 256,
    }
    values.update(overrides)
    return make_settings(tmp_path / "models", **values)


def post_zip(
    client: httpx.Client, path: str, data: bytes, headers: dict[str, str] | None = None, **fields: Any
) -> httpx.Response:
    form = {k: str(v) for k, v in fields.items()}
    return client.post(
        path,
        files={"file": ("data.zip", data, "application/zip")},
        data=form,
        headers=AUTH if headers is None else headers,
    )


def wait_for(
    client: httpx.Client, job_id: str, done: Callable[[dict[str, Any]], bool], bound_s: float = 400
) -> dict[str, Any]:
    """Poll the job until ``done`` says so; the bound only keeps a broken run from hanging the suite."""
    deadline = time.monotonic() + bound_s
    while True:
        response = client.get(f"/train/jobs/{job_id}", headers=AUTH)
        assert response.status_code == 200, response.text
        job = response.json()
        if done(job):
            return job
        if job["status"] in ("DONE", "FAILED", "CANCELLED"):
            raise AssertionError(f"the job ended before the awaited state: {job}")
        assert time.monotonic() < deadline, f"the job did not get there: {job}"
        time.sleep(0.5)


def finished(job: dict[str, Any]) -> bool:
    return job["status"] in ("DONE", "FAILED", "CANCELLED")


def wait_finished(client: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 400
    while True:
        job: dict[str, Any] = client.get(f"/train/jobs/{job_id}", headers=AUTH).json()
        if finished(job):
            return job
        assert time.monotonic() < deadline, f"the job did not finish: {job}"
        time.sleep(0.5)


# --- the token ------------------------------------------------------------------------------------
def test_training_is_off_without_a_configured_token(tmp_path: Path, service_factory: ServiceFactory) -> None:
    running = service_factory(training_settings(tmp_path, training_token=None), wait_healthy=False)
    with running.client() as client:
        response = post_zip(client, "/train", make_zip(line_set(10)), modelName="writer-anna")
        assert response.status_code == 503
        assert response.json()["code"] == "TRAINING_DISABLED"
        assert client.get("/train/jobs/" + "a" * 32, headers=AUTH).status_code == 503


def test_a_missing_or_wrong_token_is_refused(tmp_path: Path, service_factory: ServiceFactory) -> None:
    running = service_factory(training_settings(tmp_path), wait_healthy=False)
    with running.client() as client:
        for headers in ({}, {"X-Training-Token": "wrong"}, {"X-Training-Token": TOKEN + "x"}):
            for response in (
                post_zip(client, "/train", make_zip(line_set(10)), headers=headers, modelName="writer-anna"),
                post_zip(client, "/segtrain", make_zip(page_set(2)), headers=headers, modelName="seg"),
                client.get("/train/jobs", headers=headers),
                client.get("/train/jobs/" + "a" * 32, headers=headers),
                client.delete("/train/jobs/" + "a" * 32, headers=headers),
            ):
                assert response.status_code == 401, response.text
                assert response.json()["code"] == "UNAUTHORIZED"
    assert not any((tmp_path / "training").iterdir())


# --- uploads -----------------------------------------------------------------------------------------
def test_a_zip_slip_is_refused_and_nothing_is_written(tmp_path: Path, service_factory: ServiceFactory) -> None:
    running = service_factory(training_settings(tmp_path), wait_healthy=False)
    files = {**line_set(10), "../../escaped.txt": b"out of the job folder"}
    with running.client() as client:
        response = post_zip(client, "/train", make_zip(files), modelName="writer-anna")
    assert response.status_code == 422
    assert response.json()["code"] == "UNSAFE_ARCHIVE"
    assert not any((tmp_path / "training").iterdir())
    assert not list(tmp_path.rglob("escaped.txt"))


def test_an_upload_over_the_limit_is_refused(tmp_path: Path, service_factory: ServiceFactory) -> None:
    running = service_factory(training_settings(tmp_path, training_max_upload_bytes=20_000), wait_healthy=False)
    with running.client() as client:
        response = post_zip(client, "/train", make_zip(line_set(40)), modelName="writer-anna")
    assert response.status_code == 413
    assert not any((tmp_path / "training").iterdir())


def test_unknown_jobs_are_not_found_and_interrupted_jobs_are_failed(
    tmp_path: Path, service_factory: ServiceFactory
) -> None:
    job = Job(job_id="e" * 32, kind="recognition", model_name="writer-anna", base_model=None, status=JobStatus.RUNNING)
    JobStore(tmp_path / "training").save(job)
    running = service_factory(training_settings(tmp_path), wait_healthy=False)
    with running.client() as client:
        for job_id in ("a" * 32, "not-a-job"):
            response = client.get(f"/train/jobs/{job_id}", headers=AUTH)
            assert response.status_code == 404
            assert response.json()["code"] == "JOB_NOT_FOUND"
        body = client.get(f"/train/jobs/{job.job_id}", headers=AUTH).json()
    assert body["status"] == "FAILED"
    assert "interrupted" in body["error"]


def service_with_tiny_base(
    tmp_path: Path, service_factory: ServiceFactory, tiny_model: Path
) -> tuple[Settings, RunningApp]:
    """A training service whose store holds the tiny test model as ``tiny``, a base to fine-tune."""
    settings = training_settings(tmp_path)
    settings.models_dir.mkdir(parents=True)
    shutil.copyfile(tiny_model, settings.models_dir / "tiny.safetensors")
    return settings, service_factory(settings, wait_healthy=False)


# --- real recognition training --------------------------------------------------------------------------
@pytest.mark.slow
def test_a_writer_model_is_fine_tuned_with_a_grown_alphabet(
    tmp_path: Path, service_factory: ServiceFactory, tiny_model: Path
) -> None:
    settings, running = service_with_tiny_base(tmp_path, service_factory, tiny_model)
    data = make_zip(line_set(30, extra_texts=NEW_CHARACTER_LINES))
    with running.client() as client:
        response = post_zip(client, "/train", data, modelName="writer-anna-mueller", baseModel="tiny", epochs=2)
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "QUEUED"
        job_id = response.json()["jobId"]

        busy = post_zip(client, "/segtrain", make_zip(page_set(2)), modelName="seg-other")
        assert busy.status_code == 409
        assert busy.json()["code"] == "TRAINING_BUSY"

        job = wait_finished(client, job_id)
        listed = client.get("/train/jobs", headers=AUTH).json()["jobs"]
    assert job["status"] == "DONE", job
    assert (job["kind"], job["modelName"], job["baseModel"], job["modelVersion"]) == (
        "recognition",
        "writer-anna-mueller",
        "tiny",
        1,
    )
    assert [m["epoch"] for m in job["metrics"]] == [1, 2]
    assert job["accuracy"] > 0
    assert job["cer"] == pytest.approx(1 - job["accuracy"], abs=1e-6)
    assert job["error"] is None
    assert [j["jobId"] for j in listed] == [job_id]
    store = ModelStore(settings.models_dir)
    tiny, trained = store.entry("tiny"), store.entry("writer-anna-mueller")
    assert trained.source == "trained" and trained.kind == "recognition"
    assert trained.alphabet_size is not None and tiny.alphabet_size is not None
    assert trained.alphabet_size > tiny.alphabet_size
    assert any("alphabet grew" in note for note in job["info"])


@pytest.mark.slow
def test_a_running_job_reports_each_epoch_and_can_be_cancelled(
    tmp_path: Path, service_factory: ServiceFactory, tiny_model: Path
) -> None:
    settings, running = service_with_tiny_base(tmp_path, service_factory, tiny_model)
    with running.client() as client:
        response = post_zip(
            client, "/train", make_zip(line_set(30)), modelName="writer-bert", baseModel="tiny", epochs=50
        )
        job_id = response.json()["jobId"]
        during = wait_for(client, job_id, lambda j: j["status"] == "RUNNING" and j["epoch"] >= 1)
        assert during["metrics"][0]["epoch"] == 1
        pid = JobStore(settings.training_dir).load(job_id).trainer_pid  # type: ignore[union-attr]
        cancelled = client.delete(f"/train/jobs/{job_id}", headers=AUTH)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "CANCELLED"
        again = client.delete(f"/train/jobs/{job_id}", headers=AUTH)
        assert again.status_code == 409 and again.json()["code"] == "JOB_FINISHED"
    assert pid is not None and not Path(f"/proc/{pid}").exists(), "the trainer process must be gone"
    assert ModelStore(settings.models_dir).file_of("writer-bert") is None


# --- real segmentation training ---------------------------------------------------------------------------
@pytest.mark.slow
def test_segmentation_is_trained_then_fine_tuned_at_the_training_height(
    tmp_path: Path, service_factory: ServiceFactory
) -> None:
    settings = training_settings(tmp_path)
    running = service_factory(settings, wait_healthy=False)
    pages = make_zip(page_set(24, lines_per_page=5))
    with running.client() as client:
        first = post_zip(
            client, "/segtrain", pages, modelName="seg-family", spec=TINY_SEG_SPEC, epochs=1, learningRate=3e-3
        )
        assert first.status_code == 202, first.text
        job = wait_finished(client, first.json()["jobId"])
        assert job["status"] == "DONE", job
        assert job["kind"] == "segmentation" and job["modelVersion"] == 1
        assert job["cer"] == pytest.approx(1 - job["accuracy"], abs=1e-6)
        assert [m["cer"] for m in job["metrics"]] == [
            pytest.approx(1 - m["accuracy"], abs=1e-6) for m in job["metrics"]
        ]

        # Now a 256-px model exists under that name: the next run fine-tunes it.
        second = post_zip(client, "/segtrain", pages, modelName="seg-family", epochs=1, learningRate=3e-3)
        again = wait_finished(client, second.json()["jobId"])
    assert again["status"] == "DONE", again
    assert again["baseModel"] == "seg-family" and again["modelVersion"] == 2
    assert any("Fine-tuning segmentation model 'seg-family' (256 px)" in note for note in again["info"])
    store = ModelStore(settings.models_dir)
    entry = store.entry("seg-family")
    assert (entry.kind, entry.input_height, entry.source) == ("segmentation", 256, "trained")
    assert len(store.backups("seg-family")) == 1


@pytest.mark.slow
def test_a_segmentation_run_that_finds_no_lines_fails_and_installs_nothing(
    tmp_path: Path, service_factory: ServiceFactory
) -> None:
    settings = training_settings(tmp_path)
    running = service_factory(settings, wait_healthy=False)
    # ALTO this time; no spec and no base: the packaged 1800-px blla cannot be the base at 256 px.
    pages = make_zip(page_set(3, lines_per_page=4, fmt="alto"))
    with running.client() as client:
        response = post_zip(client, "/segtrain", pages, modelName="seg-never", epochs=1, learningRate=1e-7)
        assert response.status_code == 202, response.text
        job = wait_finished(client, response.json()["jobId"])
    assert job["status"] == "FAILED"
    assert "did not converge" in job["error"]
    assert any("'blla' reads pages at 1800 px" in note and "from scratch at 256 px" in note for note in job["info"])
    assert ModelStore(settings.models_dir).file_of("seg-never") is None
