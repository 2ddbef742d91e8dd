"""Training runs followed to their end: submit, follow, cancel, restarts, lost jobs, a silent service, leases."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from backend.app import make_follower
from backend.ocr_client import OcrClient
from backend.training.follower import JOB_LOST, NOT_JUDGED, SEGMENTATION_NOTE
from backend.training.leases import Claimed, LeaseLost, RunLeases
from backend.training.models import RunStatus, TrainingKind, TrainingRun
from backend.training.progress import job_state
from backend.users.models import User
from tests.backend.conftest import FakeClock, services_of
from tests.backend.ocr_client_support import client_config
from tests.backend.ocr_standin import Hang, Reply, StandIn, epoch_state, error_body
from tests.backend.training_runs import (
    RUN_KEYS,
    SLUG,
    WRITER,
    TrainingApp,
    body_of,
    enough,
    pages,
    prepare,
    start,
    stop,
)

# --- start → follow → end ---------------------------------------------------------------------


def test_a_recognition_run_trains_the_default_model_and_ends_done(app: TrainingApp, standin: StandIn) -> None:
    standin.service.training.script(
        epoch_state(1, 0.6, info=["few lines"]),
        epoch_state(2, 0.8, "DONE", modelVersion=3, info=["few lines"]),
    )
    standin.service.plan("GET /models", Reply(200, {"models": [], "default": "kurrent"}))
    enough(app, TrainingKind.RECOGNITION)
    response = start(app, "recognition")
    assert response.status_code == 202, response.text
    queued = response.json()
    assert set(queued) == RUN_KEYS
    assert (queued["status"], queued["modelName"], queued["sequence"]) == ("QUEUED", "archive-v1", 1)
    assert (queued["heldoutPageCount"], queued["heldoutLineCount"], queued["lineCount"]) == (1, 3, 12)

    done = app.wait_status(queued["id"], "DONE")
    assert done["baseModel"] == "kurrent"
    assert done["ocrJobId"] == "train-1"
    assert done["modelVersion"] == "3"
    assert done["epoch"] == 2
    assert done["metrics"] == [{"epoch": 1, "accuracy": 0.8, "cer": 0.2}, {"epoch": 2, "accuracy": 0.8, "cer": 0.2}]
    assert (done["accuracy"], done["cer"]) == (0.8, 0.2)
    assert done["info"] == ["few lines"]
    assert done["startedAt"] is not None and done["finishedAt"] is not None
    assert (done["heldoutCer"], done["replacedCer"], done["adopted"]) == (0.05, 0.2, True)
    assert app.judge.judged == [queued["id"]]

    # The ZIP holds the training pages only (never a held-out one), sent once with the token.
    job = standin.service.training.only()
    assert job.seen.headers["x-training-token"] == "s3cret"
    assert job.seen.fields == {"modelName": "archive-v1", "baseModel": "kurrent"}
    names = set(zipfile.ZipFile(io.BytesIO(job.archive)).namelist())
    with app.db.sessions() as session:
        run = session.get_one(TrainingRun, queued["id"])
        heldout = set(run.heldout_page_ids)
        assert run.active is None and run.lease_owner is None
    assert len(heldout) == 1
    assert names == {f"p{n}.xml" for n in range(1, 6) if n not in heldout}
    assert standin.service.count("POST /train") == 1


@pytest.mark.parametrize("kind", [TrainingKind.RECOGNITION, TrainingKind.WRITER])
def test_a_run_is_judged_on_pages_the_model_it_would_replace_never_trained_on(
    app: TrainingApp, standin: StandIn, kind: TrainingKind
) -> None:
    standin.service.training.enable()
    prepare(app, kind, pages(20, 3))
    held: list[set[int]] = []
    for _ in range(2):
        run = app.wait_status(start(app, kind.value, body_of(kind)).json()["id"], "DONE")
        with app.db.sessions() as session:
            held.append(set(session.get_one(TrainingRun, run["id"]).heldout_page_ids))
    first_trained_on = set(app.data.zipped[0])
    # The second model replaces the first: judged on the first one's training pages, the first
    # would look better than it is.
    assert held[1] and not held[1] & first_trained_on
    assert held[0] == held[1]


def test_segmentation_starts_from_its_previous_model_and_waits_for_an_admin(app: TrainingApp, standin: StandIn) -> None:
    # The service sends no CER for segmentation: the run stores 1 − accuracy.
    state = {"status": "DONE", "epoch": 1, "metrics": [{"epoch": 1, "accuracy": 0.75}], "accuracy": 0.75}
    new_model = "a new model at 800 px (the segmentation model in use reads at 1800 px)"
    standin.service.training.script({**state, "info": [new_model]})
    standin.service.training.script(state)
    app.data.set(TrainingKind.SEGMENTATION, pages(3, 4))
    first = start(app, "segmentation").json()
    done = app.wait_status(first["id"], "DONE")
    assert (done["modelName"], done["baseModel"]) == ("archive-seg-v1", None)
    assert done["info"] == [new_model]
    assert done["metrics"] == [{"epoch": 1, "accuracy": 0.75, "cer": 0.25}]
    assert (done["cer"], done["heldoutPageCount"], done["lineCount"]) == (0.25, 0, 12)
    assert (done["adopted"], done["adoptionNote"]) == (False, SEGMENTATION_NOTE)
    assert app.judge.judged == []

    standin.service.models.append({"name": "archive-seg-v1", "kind": "segmentation"})  # installed
    second = app.wait_status(start(app, "segmentation").json()["id"], "DONE")
    assert (second["modelName"], second["baseModel"]) == ("archive-seg-v2", "archive-seg-v1")
    assert [job.seen.path for job in standin.service.training.jobs.values()] == ["/segtrain", "/segtrain"]


def test_segmentation_never_names_a_base_model_removed_from_the_store(app: TrainingApp, standin: StandIn) -> None:
    state = {"status": "DONE", "epoch": 1, "metrics": [], "accuracy": 0.75}
    standin.service.training.script(state, state, state)
    app.data.set(TrainingKind.SEGMENTATION, pages(3, 4))
    for _ in range(2):
        app.wait_status(start(app, "segmentation").json()["id"], "DONE")
    standin.service.models.append({"name": "archive-seg-v1", "kind": "segmentation"})
    # An admin removed the latest (unadopted) model: the run fine-tunes the one before it,
    # rather than naming a base the OCR service would fail this run and every later one on.
    third = app.wait_status(start(app, "segmentation").json()["id"], "DONE")
    assert (third["modelName"], third["baseModel"]) == ("archive-seg-v3", "archive-seg-v1")
    standin.service.models.clear()  # and the first one too: the service's own rule
    standin.service.training.script(state)
    fourth = app.wait_status(start(app, "segmentation").json()["id"], "DONE")
    assert (fourth["modelName"], fourth["baseModel"]) == ("archive-seg-v4", None)


def test_a_writer_run_fine_tunes_the_default_as_the_writers_model(app: TrainingApp, standin: StandIn) -> None:
    standin.service.training.enable()
    standin.service.plan("GET /models", Reply(200, {"models": [], "default": "kurrent"}))
    writer_id = prepare(app, TrainingKind.WRITER)
    queued = start(app, "writer", {"writer": SLUG})
    assert queued.status_code == 202, queued.text
    assert queued.json()["writer"] == {"slug": SLUG, "name": WRITER}
    done = app.wait_status(queued.json()["id"], "DONE")
    assert (done["modelName"], done["baseModel"], done["kind"]) == (f"writer-{SLUG}-v1", "kurrent", "writer")
    assert app.data.zipped and writer_id is not None


def test_a_model_name_the_service_has_already_is_never_trained_over(app: TrainingApp, standin: StandIn) -> None:
    # A restored database numbers its runs again from an earlier point; the OCR service kept
    # the models trained since, archive-v1 among them (maybe the default in use).
    standin.service.training.enable()
    standin.service.models.append({"name": "archive-v1", "kind": "recognition"})
    enough(app, TrainingKind.RECOGNITION)
    failed = app.wait_status(start(app, "recognition").json()["id"], "FAILED")
    assert failed["errorCode"] == "MODEL_NAME_TAKEN" and "archive-v1" in failed["errorMessage"]
    assert standin.service.count("POST /train") == 0
    done = app.wait_status(start(app, "recognition").json()["id"], "DONE")
    assert done["modelName"] == "archive-v2"


def test_a_failed_job_fails_the_run_with_the_services_reason(app: TrainingApp, standin: StandIn) -> None:
    standin.service.training.script(epoch_state(1, 0.1), {"status": "FAILED", "error": "did not converge"})
    enough(app, TrainingKind.RECOGNITION)
    failed = app.wait_status(start(app, "recognition").json()["id"], "FAILED")
    assert (failed["errorCode"], failed["errorMessage"]) == ("TRAINING_JOB_FAILED", "did not converge")
    assert failed["finishedAt"] is not None and app.judge.judged == []
    # The run is no longer active: the next one may start.
    assert start(app, "recognition").status_code == 202


def test_a_defect_inside_the_backend_fails_the_run_instead_of_leaving_it_running(
    app: TrainingApp, standin: StandIn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: Any, **__: Any) -> None:
        raise RuntimeError("a defect while building the ZIP")

    monkeypatch.setattr(app.data, "write_training_zip", broken)
    enough(app, TrainingKind.RECOGNITION)
    with caplog.at_level(logging.ERROR, logger="backend.training.follower"):
        failed = app.wait_status(start(app, "recognition").json()["id"], "FAILED")
    assert failed["errorCode"] == "INTERNAL_ERROR"
    assert failed["finishedAt"] is not None and standin.service.count("POST /train") == 0
    # The traceback is in the operator's log, not in the answer.
    assert "a defect while building the ZIP" in caplog.text and "RuntimeError" not in failed["errorMessage"]
    assert start(app, "recognition").status_code == 202


def test_a_defect_while_judging_keeps_the_trained_run_done_and_unadopted(
    app: TrainingApp, standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(run_id: int) -> None:
        raise RuntimeError("a defect while judging")

    monkeypatch.setattr(app.judge, "judge_and_adopt", broken)
    standin.service.training.script(epoch_state(1, 0.8, "DONE", modelVersion=1))
    standin.service.plan("GET /models", Reply(200, {"models": [], "default": "kurrent"}))
    enough(app, TrainingKind.RECOGNITION)
    done = app.wait_status(start(app, "recognition").json()["id"], "DONE")
    assert (done["adopted"], done["adoptionNote"], done["heldoutCer"]) == (False, NOT_JUDGED, None)
    assert done["modelName"] == "archive-v1" and done["finishedAt"] is not None


@pytest.mark.parametrize(
    ("reply", "code", "message"),
    [
        (Reply(409, error_body("TRAINING_BUSY", "Another job runs.")), "TRAINING_BUSY", "Another job runs."),
        (Reply(422, error_body("INVALID_TRAINING_DATA", "No lines.")), "INVALID_TRAINING_DATA", "No lines."),
    ],
)
def test_a_refused_submission_fails_the_run_with_the_services_answer(
    app: TrainingApp, standin: StandIn, reply: Reply, code: str, message: str
) -> None:
    standin.service.training.enable()
    standin.service.plan("POST /train", reply)
    enough(app, TrainingKind.RECOGNITION)
    failed = app.wait_status(start(app, "recognition").json()["id"], "FAILED")
    assert (failed["errorCode"], failed["errorMessage"], failed["ocrJobId"]) == (code, message, None)


def test_answers_the_database_cannot_store_as_sent_still_end_the_run(app: TrainingApp, standin: StandIn) -> None:
    # NUL (PostgreSQL refuses it in text and JSONB) and an epoch past INTEGER: stored, the run
    # would stay RUNNING for ever (each follower failing to record the same answer).
    standin.service.training.script(
        {**epoch_state(1, 0.5), "epoch": 2**40, "modelVersion": "v\x001"},
        {"status": "FAILED", "error": "did not\x00 converge", "info": ["a note\x00with NUL"]},
    )
    enough(app, TrainingKind.RECOGNITION)
    failed = app.wait_status(start(app, "recognition").json()["id"], "FAILED")
    assert (failed["errorCode"], failed["errorMessage"]) == ("TRAINING_JOB_FAILED", "did not converge")
    assert failed["info"] == ["a notewith NUL"] and failed["modelVersion"] == "v1"


def test_a_refusal_the_database_cannot_store_as_sent_still_fails_the_run(app: TrainingApp, standin: StandIn) -> None:
    standin.service.training.enable()
    standin.service.plan("POST /train", Reply(422, error_body("X" * 200, "no\x00 lines")))
    enough(app, TrainingKind.RECOGNITION)
    failed = app.wait_status(start(app, "recognition").json()["id"], "FAILED")
    assert (failed["errorCode"], failed["errorMessage"]) == ("X" * 64, "no lines")
    assert standin.service.count("POST /train") == 1


def test_a_job_accepted_behind_a_lost_answer_is_followed_not_left_training_unseen(
    app: TrainingApp, standin: StandIn
) -> None:
    # A proxy in front of the OCR service gives up (504) while the service takes the upload
    # and starts the job: the run must follow that job, not end FAILED beside it.
    standin.service.training.script(epoch_state(2, 0.9, "DONE", modelVersion=1))
    httpx.post(
        standin.url + "/train", files={"file": ("t.zip", b"PK")}, data={"modelName": "archive-v1"}
    ).raise_for_status()  # what the service did with the upload the proxy gave up on
    standin.service.plan("POST /train", Reply(504, error_body("GATEWAY_TIMEOUT", "upstream timed out")))
    enough(app, TrainingKind.RECOGNITION)
    ended = ("DONE", "FAILED", "CANCELLED")
    done = app.wait(start(app, "recognition").json()["id"], lambda r: r["status"] in ended, "ended")
    assert (done["status"], done["ocrJobId"], done["lineCount"]) == ("DONE", "train-1", 12)


def test_an_unreachable_training_service_fails_the_run_and_leaves_no_temporary_file(
    start_app: Callable[..., TrainingApp], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    # The replicas answer (the breaker is closed), the training replica does not.
    app = start_app(ocr_training_url="http://127.0.0.1:9")
    enough(app, TrainingKind.RECOGNITION)
    failed = app.wait_status(start(app, "recognition").json()["id"], "FAILED")
    assert failed["errorCode"] == "OCR_SERVICE_UNAVAILABLE"
    assert "could not be reached" in failed["errorMessage"]
    assert list(scratch.iterdir()) == []


# --- cancel -----------------------------------------------------------------------------------


def test_cancelling_a_run_not_yet_sent_ends_it_at_once_and_nothing_is_sent(
    app: TrainingApp, standin: StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="backend.training.follower")
    standin.service.training.enable()
    standin.service.plan("GET /models", Hang())  # the follower waits before it builds the ZIP
    enough(app, TrainingKind.RECOGNITION)
    run = start(app, "recognition").json()
    app.wait(run["id"], lambda _: standin.service.count("GET /models") == 1, "taken up")
    cancelled = app.client.post(f"/api/admin/training/runs/{run['id']}/cancel", headers=app.admin)
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["cancelRequested"]) == ("CANCELLED", True)
    assert cancelled.json()["cancelledBy"] is not None and cancelled.json()["finishedAt"] is not None
    standin.service.release()
    # The follower goes on, builds the ZIP, sees the run cancelled, sends nothing and lets it go.
    gone = f"training run {run['id']}: no longer followed here"
    app.wait(run["id"], lambda _: gone in caplog.text, "let go by its follower")
    assert len(app.data.zipped) == 1
    assert standin.service.count("POST /train") == 0
    assert app.run(run["id"])["status"] == "CANCELLED"
    again = app.client.post(f"/api/admin/training/runs/{run['id']}/cancel", headers=app.admin)
    assert (again.status_code, again.json()["code"]) == (409, "TRAINING_RUN_FINISHED")


def test_a_job_accepted_for_a_run_cancelled_meanwhile_is_cancelled(
    app: TrainingApp, standin: StandIn, tmp_path: Path
) -> None:
    """The cancel came while the ZIP was on the wire: the job the service started is cancelled."""
    jobs = standin.service.training.enable()
    httpx.post(standin.url + "/train", files={"file": ("t.zip", b"PK")}, data={"modelName": "archive-v1"})
    with app.db.sessions() as session:
        user_id = session.scalars(select(User.id)).first()
        run = TrainingRun(
            kind=TrainingKind.RECOGNITION, status=RunStatus.CANCELLED, active=None, sequence=1,
            model_name="archive-v1", heldout_page_ids=[], metrics=[], info=[], adopted=False,
            cancel_requested=True, created_by=user_id, created_at=datetime.now(UTC),
        )  # fmt: skip
        session.add(run)
        session.commit()
        run_id = run.id
    services = services_of(app.client)
    follower = make_follower(services, owner="this-backend")
    follower.client = OcrClient(client_config(standin.url), CollectorRegistry())
    claimed = Claimed(run_id, TrainingKind.RECOGNITION, None, RunStatus.QUEUED, None, "archive-v1", ())

    async def accepted() -> None:
        try:
            with pytest.raises(LeaseLost):
                await follower._running(claimed, "train-1", None, (1, 3))
        finally:
            await follower.client.aclose()

    asyncio.run(accepted())
    assert jobs.job("train-1").status == "CANCELLED"
    ended = app.run(run_id)
    assert (ended["status"], ended["ocrJobId"]) == ("CANCELLED", "train-1")


def test_cancelling_a_run_whose_backend_hung_while_sending_cancels_the_job_it_started(
    app: TrainingApp, standin: StandIn
) -> None:
    # Another backend took the run up and hangs mid-upload (its lease still live): the run is
    # QUEUED without a job, yet the OCR service has accepted the ZIP and trains.
    standin.service.training.script(epoch_state(1, 0.5))
    now = datetime.now(UTC)
    with app.db.sessions() as session:
        user_id = session.scalars(select(User.id)).first()
        run = TrainingRun(
            kind=TrainingKind.RECOGNITION, status=RunStatus.QUEUED, active=True, sequence=1,
            model_name="archive-v1", heldout_page_ids=[1], metrics=[], info=[], adopted=False,
            cancel_requested=False, created_by=user_id, created_at=now,
            lease_owner="a-hung-backend", lease_expires_at=now + timedelta(hours=1),
        )  # fmt: skip
        session.add(run)
        session.commit()
        run_id = run.id
    httpx.post(
        standin.url + "/train", files={"file": ("t.zip", b"PK")}, data={"modelName": "archive-v1"}
    ).raise_for_status()
    cancelled = app.client.post(f"/api/admin/training/runs/{run_id}/cancel", headers=app.admin)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "CANCELLED"
    assert standin.service.count("DELETE /train/jobs/train-1") == 1
    assert standin.service.training.job("train-1").status == "CANCELLED"


def test_cancelling_a_running_run_cancels_its_job(app: TrainingApp, standin: StandIn) -> None:
    standin.service.training.script(epoch_state(1, 0.5))
    enough(app, TrainingKind.RECOGNITION)
    run = app.wait_status(start(app, "recognition").json()["id"], "RUNNING")
    cancelled = app.client.post(f"/api/admin/training/runs/{run['id']}/cancel", headers=app.admin)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "CANCELLED"
    assert standin.service.count(f"DELETE /train/jobs/{run['ocrJobId']}") >= 1
    assert standin.service.training.only().status == "CANCELLED"
    assert start(app, "recognition").status_code == 202


def test_a_cancel_the_service_does_not_hear_is_sent_again_by_the_follower(app: TrainingApp, standin: StandIn) -> None:
    standin.service.training.script(epoch_state(1, 0.5))
    enough(app, TrainingKind.RECOGNITION)
    run = app.wait_status(start(app, "recognition").json()["id"], "RUNNING")
    path = f"/train/jobs/{run['ocrJobId']}"
    # Every cancel goes unheard (the route's and the follower's, whichever comes first) ...
    standin.service.plan(f"DELETE {path}", *[Reply(503, error_body("OCR_SERVICE_UNAVAILABLE"))] * 100_000)
    refused = app.client.post(f"/api/admin/training/runs/{run['id']}/cancel", headers=app.admin)
    assert (refused.status_code, refused.json()["code"]) == (503, "OCR_SERVICE_UNAVAILABLE")
    assert "recorded" in refused.json()["message"]
    assert app.run(run["id"])["cancelRequested"] is True
    app.wait(run["id"], lambda _: standin.service.count(f"DELETE {path}") >= 3, "asked again by the follower")
    assert app.run(run["id"])["status"] == "RUNNING"
    # ... until the service answers again: the follower's next cancel ends the run.
    standin.service.script.pop(f"DELETE {path}")
    ended = app.wait_status(run["id"], "CANCELLED")
    assert ended["cancelRequested"] is True


# --- restarts, lost jobs, a silent service -----------------------------------------------------


def test_a_backend_restart_mid_run_re_attaches_and_the_run_ends_done(
    start_app: Callable[..., TrainingApp], standin: StandIn
) -> None:
    standin.service.training.script(epoch_state(1, 0.5))
    first = start_app()
    enough(first, TrainingKind.RECOGNITION)
    run = first.wait_status(start(first, "recognition").json()["id"], "RUNNING")
    stop(first.client)
    with first.db.sessions() as session:
        left = session.get_one(TrainingRun, run["id"])
        assert (left.status, left.lease_expires_at) == (RunStatus.RUNNING, None)  # handed back
    # The OCR service trained on while the backend was away.
    standin.service.training.advance(run["ocrJobId"], epoch_state(3, 0.9, "DONE", modelVersion=1))
    second = start_app()
    done = second.wait_status(run["id"], "DONE")
    assert (done["epoch"], done["ocrJobId"]) == (3, run["ocrJobId"])
    assert standin.service.count("POST /train") == 1


def test_a_run_cut_off_while_sending_follows_the_job_the_service_accepted(
    start_app: Callable[..., TrainingApp], standin: StandIn
) -> None:
    app = start_app()
    stop(app.client)
    standin.service.training.script(epoch_state(2, 0.9, "DONE", modelVersion=1))
    # What a backend that died mid-upload leaves: the run QUEUED without a job, its lease
    # expired, and in the OCR service a job training the run's model.
    with app.db.sessions() as session:
        user = session.scalars(select(User)).first()
        assert user is not None
        run = TrainingRun(
            kind=TrainingKind.RECOGNITION, status=RunStatus.QUEUED, active=True, sequence=1,
            model_name="archive-v1", heldout_page_ids=[1], metrics=[], info=[], adopted=False,
            cancel_requested=False, created_by=user.id, created_at=datetime.now(UTC),
            lease_owner="a-dead-backend", lease_expires_at=datetime.now(UTC) - timedelta(seconds=1),
        )  # fmt: skip
        session.add(run)
        session.commit()
        run_id = run.id
    httpx.post(
        standin.url + "/train", files={"file": ("t.zip", b"PK")}, data={"modelName": "archive-v1"}
    ).raise_for_status()
    again = start_app()
    done = again.wait_status(run_id, "DONE")
    assert done["ocrJobId"] == "train-1"
    assert standin.service.count("POST /train") == 1  # not sent a second time


def test_a_job_the_service_lost_fails_the_run_with_that_reason(app: TrainingApp, standin: StandIn) -> None:
    standin.service.training.script(epoch_state(1, 0.5))
    enough(app, TrainingKind.RECOGNITION)
    run = app.wait_status(start(app, "recognition").json()["id"], "RUNNING")
    standin.service.training.forget(run["ocrJobId"])
    failed = app.wait_status(run["id"], "FAILED")
    assert failed["errorCode"] == JOB_LOST
    assert "no longer knows the training job" in failed["errorMessage"]
    assert run["ocrJobId"] in failed["errorMessage"]


def test_a_silent_service_keeps_the_run_running_until_the_lost_after_limit(
    start_app: Callable[..., TrainingApp], standin: StandIn, clock: FakeClock
) -> None:
    app = start_app(clock=clock, training_lost_after_s=600)
    standin.service.training.script(epoch_state(1, 0.5))
    enough(app, TrainingKind.RECOGNITION)
    run = app.wait_status(start(app, "recognition").json()["id"], "RUNNING")
    route = f"GET /train/jobs/{run['ocrJobId']}"
    standin.service.plan(route, *[Reply(503, error_body("OCR_SERVICE_UNAVAILABLE"))] * 100_000)
    seen = standin.service.count(route)
    app.wait(run["id"], lambda _: standin.service.count(route) >= seen + 3, "asked three more times")
    assert app.run(run["id"])["status"] == "RUNNING"  # unanswered polls within the limit
    clock.advance(601)
    failed = app.wait_status(run["id"], "FAILED")
    assert failed["errorCode"] == "OCR_SERVICE_UNAVAILABLE"
    assert "has not answered about training job" in failed["errorMessage"]
    standin.service.reset()


def test_a_backend_away_longer_than_the_limit_does_not_count_as_the_services_silence(
    start_app: Callable[..., TrainingApp], standin: StandIn, clock: FakeClock
) -> None:
    standin.service.training.script(epoch_state(1, 0.5))
    first = start_app(clock=clock, training_lost_after_s=600)
    enough(first, TrainingKind.RECOGNITION)
    run = first.wait_status(start(first, "recognition").json()["id"], "RUNNING")
    stop(first.client)
    clock.advance(3600)  # the backend was down for an hour; the OCR service trained on
    # Both come back together: the OCR service answers only after the backend's first polls.
    route = f"GET /train/jobs/{run['ocrJobId']}"
    standin.service.plan(route, *[Reply(503, error_body("OCR_SERVICE_UNAVAILABLE"))] * 3)
    standin.service.training.advance(run["ocrJobId"], epoch_state(3, 0.9, "DONE", modelVersion=1))
    second = start_app(clock=clock, training_lost_after_s=600)
    done = second.wait(run["id"], lambda r: r["status"] != "RUNNING", "ended")
    assert (done["status"], done["errorMessage"]) == ("DONE", None)


# --- the job's JSON, read defensively; leases -------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["nul\x00", "lone \ud800 surrogate", "9" * 101]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=8,
)


@settings(suppress_health_check=[HealthCheck.too_slow])  # the first draws are slow on a busy machine
@given(
    job=st.dictionaries(
        st.sampled_from(["status", "epoch", "metrics", "accuracy", "cer", "info", "modelVersion", "error"]),
        JSON_VALUES,
    ),
    segmentation=st.booleans(),
)
def test_any_job_answer_gives_storable_progress(job: dict[str, Any], segmentation: bool) -> None:
    state = job_state(job, segmentation=segmentation)
    assert state.status in {None, "QUEUED", "RUNNING", "DONE", "FAILED", "CANCELLED"}
    rates = [state.accuracy, state.cer] + [m[k] for m in state.metrics for k in ("accuracy", "cer")]
    assert all(rate is None or (type(rate) is float and math.isfinite(rate)) for rate in rates)
    assert all(type(m["epoch"]) is int for m in state.metrics)
    assert all(isinstance(note, str) for note in state.info)
    # PostgreSQL's JSONB takes no NaN and no NUL, its INTEGER nothing past 2³¹ − 1; no
    # encoding holds a lone surrogate.
    stored = json.dumps(state.values(), allow_nan=False, ensure_ascii=False)
    stored.encode()
    assert "\x00" not in stored and (state.error is None or "\x00" not in state.error)
    assert state.epoch is None or state.epoch <= 2**31 - 1
    assert state.model_version is None or len(state.model_version) <= 100


@given(accuracy=st.floats(0, 1), cer=st.none() | st.floats(0, 1))
def test_segmentation_cer_is_one_minus_accuracy_where_the_service_sends_none(
    accuracy: float, cer: float | None
) -> None:
    job = {"status": "RUNNING", "metrics": [{"epoch": 1, "accuracy": accuracy, "cer": cer}], "cer": cer}
    for segmentation in (True, False):
        state = job_state({**job, "accuracy": accuracy}, segmentation=segmentation)
        expected = cer if cer is not None else (1 - accuracy if segmentation else None)
        assert state.cer == expected and state.metrics[0]["cer"] == expected


def test_a_run_another_live_follower_holds_is_left_alone(app: TrainingApp) -> None:
    now = datetime.now(UTC)
    with app.db.sessions() as session:
        user_id = session.scalars(select(User.id)).first()
        session.add(
            TrainingRun(
                kind=TrainingKind.RECOGNITION, status=RunStatus.RUNNING, active=True, sequence=1,
                model_name="archive-v1", heldout_page_ids=[], metrics=[], info=[], adopted=False,
                cancel_requested=False, created_by=user_id, created_at=now, ocr_job_id="train-9",
                lease_owner="another-backend", lease_expires_at=now + timedelta(seconds=60),
            )
        )  # fmt: skip
        session.commit()
    mine = RunLeases(app.db, "this-backend", timedelta(seconds=60))
    assert mine.claim(now) is None
    claimed = mine.claim(now + timedelta(seconds=61))  # its lease ran out: the follower died
    assert claimed is not None and claimed.ocr_job_id == "train-9"
    assert RunLeases(app.db, "another-backend", timedelta(seconds=60)).claim(now + timedelta(seconds=62)) is None
