"""Training runs: the one guard, start → follow → end, cancel, restart, lost jobs, the API's shapes."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import threading
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select

from backend.app import make_follower
from backend.ocr_client import OcrClient
from backend.training.follower import JOB_LOST, SEGMENTATION_NOTE
from backend.training.leases import Claimed, LeaseLost, RunLeases
from backend.training.models import RunStatus, TrainingKind, TrainingRun
from backend.training.progress import job_state
from backend.users.models import User
from tests.backend.conftest import FakeClock, services_of
from tests.backend.ocr_client_support import client_config
from tests.backend.ocr_standin import Hang, Reply, StandIn, epoch_state, error_body
from tests.backend.training_runs import TrainingApp, pages, stop, training_app_factory

RUN_KEYS = {
    "id", "kind", "writer", "status", "ocrJobId", "sequence", "baseModel", "modelName", "modelVersion",
    "lineCount", "pageCount", "heldoutLineCount", "heldoutPageCount", "epoch", "metrics", "accuracy", "cer",
    "info", "heldoutCer", "replacedModel", "replacedCer", "adopted", "adoptedAt", "adoptedBy", "adoptionNote",
    "errorCode", "errorMessage", "cancelRequested", "cancelledBy", "createdBy", "createdAt", "startedAt",
    "finishedAt",
}  # fmt: skip
KIND_KEYS = {"kind", "eligibleLines", "eligiblePages", "threshold", "thresholdUnit", "canStart", "reason"}
WRITER = "Anna Müller"
SLUG = "anna-mueller"


@pytest.fixture
def start_app(database_url: str, tmp_path: Path, standin: StandIn, db: Any) -> Iterator[Callable[..., TrainingApp]]:
    yield from training_app_factory(database_url, tmp_path, standin)


@pytest.fixture
def app(start_app: Callable[..., TrainingApp]) -> TrainingApp:
    return start_app()


def enough(app: TrainingApp, kind: TrainingKind, writer_id: int | None = None) -> None:
    """Data above the test thresholds: 5 pages of 3 lines (1 held out: 12 lines left ≥ 6)."""
    app.data.set(kind, pages(5, 3), writer_id)


def start(app: TrainingApp, kind: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return app.client.post(f"/api/admin/training/{kind}", headers=app.admin, json=body)


def body_of(kind: TrainingKind) -> dict[str, Any] | None:
    return {"writer": SLUG} if kind is TrainingKind.WRITER else None


def prepare(app: TrainingApp, kind: TrainingKind, found: list[Any] | None = None) -> int | None:
    """Data of ``kind`` (for a writer run: Anna Müller's, with a document of hers); her id."""
    writer_id = None
    if kind is TrainingKind.WRITER:
        app.upload(1, WRITER)
        writer_id = app.writer_id(SLUG)
    app.data.set(kind, found if found is not None else pages(5, 3), writer_id)
    return writer_id


ALL_KINDS = pytest.mark.parametrize("kind", list(TrainingKind))


# --- the one guard ----------------------------------------------------------------------------


@ALL_KINDS
def test_a_run_of_each_kind_is_refused_while_another_is_active(
    app: TrainingApp, standin: StandIn, kind: TrainingKind
) -> None:
    standin.service.training.script(epoch_state(1, 0.5))  # the first run keeps RUNNING
    enough(app, TrainingKind.RECOGNITION)
    prepare(app, kind)
    first = start(app, "recognition")
    assert first.status_code == 202, first.text
    refused = start(app, kind.value, body_of(kind))
    assert refused.status_code == 409
    assert refused.json()["code"] == "TRAINING_ALREADY_RUNNING"
    assert refused.json()["details"] == {"runId": first.json()["id"]}
    with app.db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(TrainingRun)) == 1


@ALL_KINDS
def test_too_little_data_is_refused_with_what_is_missing(app: TrainingApp, kind: TrainingKind) -> None:
    # Recognition 6 lines, writer 4 (after 1 held-out page), segmentation 2 pages.
    found = pages(1, 1) if kind is TrainingKind.SEGMENTATION else pages(3, 1)
    prepare(app, kind, found)
    response = start(app, kind.value, body_of(kind))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "NOT_ENOUGH_TRAINING_DATA"
    expected = {
        TrainingKind.RECOGNITION: {"needed": 6, "have": 2, "missing": 4, "unit": "lines"},
        TrainingKind.WRITER: {"needed": 4, "have": 2, "missing": 2, "unit": "lines"},
        TrainingKind.SEGMENTATION: {"needed": 2, "have": 1, "missing": 1, "unit": "pages"},
    }[kind]
    assert body["details"] == expected
    assert f"so {expected['missing']} more" in body["message"] and "are missing" in body["message"]
    # The overview gives the same reason, word for word: one guard for both.
    overview = app.client.get("/api/admin/training", headers=app.admin).json()
    shown = (
        overview["writers"][0]
        if kind is TrainingKind.WRITER
        else next(k for k in overview["kinds"] if k["kind"] == kind.value)
    )
    assert shown["canStart"] is False
    assert shown["reason"] == body["message"]


@pytest.mark.parametrize("kind", [TrainingKind.RECOGNITION, TrainingKind.WRITER])  # segmentation holds none out
def test_too_few_pages_to_hold_some_out_is_counted_in_pages(app: TrainingApp, kind: TrainingKind) -> None:
    prepare(app, kind, pages(1, 50))  # lines enough, but 1 page cannot be both held out and trained on
    response = start(app, kind.value, body_of(kind))
    assert response.status_code == 422
    assert response.json()["details"] == {"needed": 2, "have": 1, "missing": 1, "unit": "pages"}
    assert "1 more pages are missing" in response.json()["message"]


@ALL_KINDS
def test_an_open_breaker_refuses_every_kind(
    app: TrainingApp, kind: TrainingKind, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare(app, kind)
    ocr = app.client.app.state.services.ocr  # type: ignore[attr-defined]
    monkeypatch.setattr(ocr, "refuses_calls", lambda: True)
    response = start(app, kind.value, body_of(kind))
    assert (response.status_code, response.json()["code"]) == (503, "OCR_SERVICE_UNAVAILABLE")


@ALL_KINDS
def test_without_a_training_token_training_is_disabled(
    start_app: Callable[..., TrainingApp], kind: TrainingKind
) -> None:
    app = start_app(ocr_training_token=None)
    prepare(app, kind)
    response = start(app, kind.value, body_of(kind))
    assert (response.status_code, response.json()["code"]) == (503, "TRAINING_DISABLED")
    overview = app.client.get("/api/admin/training", headers=app.admin).json()
    assert overview["trainingEnabled"] is False
    assert all(k["canStart"] is False and "switched off" in k["reason"] for k in overview["kinds"])


def test_an_unknown_writer_is_404_and_bad_requests_are_422(app: TrainingApp) -> None:
    enough(app, TrainingKind.RECOGNITION)
    assert start(app, "writer", {"writer": "nobody"}).json()["code"] == "WRITER_NOT_FOUND"
    assert start(app, "writer", {"writer": "nobody"}).status_code == 404
    for kind, body in [
        ("writer", None),
        ("recognition", {"writer": "anna"}),
        ("segmentation", {"writer": "anna"}),
        ("painting", None),
        ("runs", None),
        ("recognition", {"epochs": 3}),
    ]:
        response = start(app, kind, body)
        assert (response.status_code, response.json()["code"]) == (422, "INVALID_REQUEST"), (kind, body)
    with app.db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(TrainingRun)) == 0


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

    second = app.wait_status(start(app, "segmentation").json()["id"], "DONE")
    assert (second["modelName"], second["baseModel"]) == ("archive-seg-v2", "archive-seg-v1")
    assert [job.seen.path for job in standin.service.training.jobs.values()] == ["/segtrain", "/segtrain"]


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


def test_a_failed_job_fails_the_run_with_the_services_reason(app: TrainingApp, standin: StandIn) -> None:
    standin.service.training.script(epoch_state(1, 0.1), {"status": "FAILED", "error": "did not converge"})
    enough(app, TrainingKind.RECOGNITION)
    failed = app.wait_status(start(app, "recognition").json()["id"], "FAILED")
    assert (failed["errorCode"], failed["errorMessage"]) == ("TRAINING_JOB_FAILED", "did not converge")
    assert failed["finishedAt"] is not None and app.judge.judged == []
    # The run is no longer active: the next one may start.
    assert start(app, "recognition").status_code == 202


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
    standin.service.plan(f"DELETE {path}", Reply(503, error_body("OCR_SERVICE_UNAVAILABLE")))
    refused = app.client.post(f"/api/admin/training/runs/{run['id']}/cancel", headers=app.admin)
    assert (refused.status_code, refused.json()["code"]) == (503, "OCR_SERVICE_UNAVAILABLE")
    assert "recorded" in refused.json()["message"]
    ended = app.wait_status(run["id"], "CANCELLED")
    assert ended["cancelRequested"] is True
    assert standin.service.count(f"DELETE {path}") >= 2


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


# --- the API's shapes, paging, adoption ---------------------------------------------------------


def test_the_overview_shows_kinds_writers_runs_and_the_service(app: TrainingApp, standin: StandIn) -> None:
    standin.service.training.enable()
    enough(app, TrainingKind.RECOGNITION)
    writer_id = prepare(app, TrainingKind.WRITER, pages(2, 2))
    app.upload(2, "Karl Lehmann")
    karl = app.writer_id("karl-lehmann")
    app.data.set(TrainingKind.WRITER, pages(6, 3, first_id=50), karl)
    app.data.new_lines[karl] = 60
    done = app.wait_status(start(app, "recognition").json()["id"], "DONE")
    karls = app.wait_status(start(app, "writer", {"writer": "karl-lehmann"}).json()["id"], "DONE")

    response = app.client.get("/api/admin/training", headers=app.admin)
    assert response.status_code == 200, response.text
    overview = response.json()
    assert set(overview) == {"trainingEnabled", "kinds", "writers", "runs", "ocrService"}
    assert overview["trainingEnabled"] is True
    assert [k["kind"] for k in overview["kinds"]] == ["recognition", "segmentation"]
    recognition, segmentation = overview["kinds"]
    assert set(recognition) == KIND_KEYS
    assert recognition == {
        "kind": "recognition", "eligibleLines": 15, "eligiblePages": 5, "threshold": 6,
        "thresholdUnit": "lines", "canStart": True, "reason": None,
    }  # fmt: skip
    assert (segmentation["canStart"], segmentation["thresholdUnit"], segmentation["eligiblePages"]) == (
        False,
        "pages",
        0,
    )
    anna, karl_out = overview["writers"]
    assert set(anna) == KIND_KEYS | {"writer", "model", "newLinesSinceLastRun", "suggested"}
    assert anna["writer"] == {"slug": SLUG, "name": WRITER} and anna["model"] is None
    assert (anna["canStart"], anna["suggested"], anna["eligibleLines"]) == (False, False, 4)
    assert "2 more lines are missing" in anna["reason"]
    assert karl_out["writer"]["slug"] == "karl-lehmann"
    assert (karl_out["canStart"], karl_out["suggested"], karl_out["newLinesSinceLastRun"]) == (True, True, 60)
    # New lines count from the writer's last DONE run; Anna has none, so all of hers count.
    assert app.data.asked_since[karl] == datetime.fromisoformat(karls["createdAt"])
    assert app.data.asked_since[writer_id] is None
    assert [run["id"] for run in overview["runs"]] == [karls["id"], done["id"]]
    assert set(overview["runs"][0]) == RUN_KEYS
    service = overview["ocrService"]
    assert (service["healthy"], service["breaker"], service["message"]) == (True, "CLOSED", None)


def test_the_overview_says_when_the_service_does_not_answer(start_app: Callable[..., TrainingApp]) -> None:
    app = start_app(ocr_urls="http://127.0.0.1:9")
    service = app.client.get("/api/admin/training", headers=app.admin).json()["ocrService"]
    assert service["healthy"] is False and "127.0.0.1:9" in service["message"]


def test_runs_are_listed_newest_first_page_by_page(app: TrainingApp) -> None:
    with app.db.sessions() as session:
        user_id = session.scalars(select(User.id)).first()
        for n in range(1, 6):
            session.add(
                TrainingRun(
                    kind=TrainingKind.RECOGNITION, status=RunStatus.DONE, active=None, sequence=n,
                    model_name=f"archive-v{n}", heldout_page_ids=[], metrics=[], info=[], adopted=False,
                    cancel_requested=False, created_by=user_id, created_at=datetime.now(UTC),
                )
            )  # fmt: skip
        session.commit()
    first = app.client.get("/api/admin/training/runs?limit=2", headers=app.admin).json()
    assert [run["sequence"] for run in first["runs"]] == [5, 4]
    second = app.client.get(f"/api/admin/training/runs?limit=2&before={first['nextBefore']}", headers=app.admin)
    assert [run["sequence"] for run in second.json()["runs"]] == [3, 2]
    last = app.client.get(f"/api/admin/training/runs?limit=2&before={second.json()['nextBefore']}", headers=app.admin)
    assert [run["sequence"] for run in last.json()["runs"]] == [1]
    assert last.json()["nextBefore"] is None
    assert app.client.get("/api/admin/training/runs?limit=0", headers=app.admin).status_code == 422
    missing = app.client.get("/api/admin/training/runs/999", headers=app.admin)
    assert (missing.status_code, missing.json()["code"]) == (404, "TRAINING_RUN_NOT_FOUND")


def test_only_a_done_run_not_yet_adopted_can_be_adopted_by_hand(app: TrainingApp, standin: StandIn) -> None:
    standin.service.training.script(epoch_state(1, 0.5))
    app.data.set(TrainingKind.SEGMENTATION, pages(3, 4))
    run = app.wait_status(start(app, "segmentation").json()["id"], "RUNNING")
    adopt = f"/api/admin/training/runs/{run['id']}/adopt"
    refused = app.client.post(adopt, headers=app.admin)
    assert (refused.status_code, refused.json()["code"]) == (409, "MODEL_NOT_ADOPTABLE")
    standin.service.training.advance(run["ocrJobId"], epoch_state(2, 0.9, "DONE", modelVersion=1))
    app.wait_status(run["id"], "DONE")
    adopted = app.client.post(adopt, headers=app.admin)
    assert adopted.status_code == 200, adopted.text
    assert adopted.json()["adopted"] is True
    assert app.judge.adopted_by_hand == [(run["id"], adopted.json()["adoptedBy"])]
    again = app.client.post(adopt, headers=app.admin)
    assert (again.status_code, again.json()["code"]) == (409, "MODEL_NOT_ADOPTABLE")
    assert app.client.post("/api/admin/training/runs/999/adopt", headers=app.admin).status_code == 404


def test_an_archivist_may_not_start_a_run(app: TrainingApp) -> None:
    enough(app, TrainingKind.RECOGNITION)
    response = app.client.post("/api/admin/training/recognition", headers=app.archivist)
    assert (response.status_code, response.json()["code"]) == (403, "FORBIDDEN")


# --- two starts at once -----------------------------------------------------------------------


def test_two_starts_at_the_same_moment_make_exactly_one_run(app: TrainingApp) -> None:
    """Both pass the guard (no run active yet), both insert: the unique ``active`` lets one in."""
    enough(app, TrainingKind.RECOGNITION)
    both = threading.Barrier(2)
    app.data.on_split = lambda: both.wait(timeout=30)
    results: list[int] = []

    def go(kind: str) -> None:
        results.append(start(app, kind).status_code)

    threads = [threading.Thread(target=go, args=(kind,)) for kind in ("recognition", "recognition")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [202, 409]
    with app.db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(TrainingRun)) == 1


# --- the job's JSON, read defensively; leases -------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
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
    json.dumps(state.values(), allow_nan=False)  # PostgreSQL's JSONB takes no NaN


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
