"""Training runs through the API: the one guard for every kind, the overview, the list, adopting, two starts at once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from backend.training.models import RunStatus, TrainingKind, TrainingRun
from backend.users.models import User
from tests.backend.ocr_standin import StandIn, epoch_state
from tests.backend.training_runs import (
    KIND_KEYS,
    RUN_KEYS,
    SLUG,
    WRITER,
    TrainingApp,
    body_of,
    enough,
    pages,
    prepare,
    start,
)

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
    overview = app.client.get("/api/admin/training", headers=app.admin).json()
    for shown in [*overview["kinds"], *overview["writers"]]:
        assert (shown["reasonCode"], shown["reasonDetails"]) == (
            "TRAINING_ALREADY_RUNNING",
            {"runId": first.json()["id"]},
        )
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
    assert (shown["reasonCode"], shown["reasonDetails"]) == (body["code"], body["details"])


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
    assert all((k["reasonCode"], k["reasonDetails"]) == ("TRAINING_DISABLED", None) for k in overview["kinds"])


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
        "thresholdUnit": "lines", "canStart": True, "reason": None, "reasonCode": None, "reasonDetails": None,
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
