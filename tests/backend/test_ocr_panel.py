"""What the document view's OCR panel asks: the models to choose (the writer's preselected) and
the document's current job. Against the scripted stand-in OCR service; SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from backend.documents.models import Line, Writer
from backend.ocr.panel import recognition_models
from backend.training.models import TrainingKind
from backend.users.models import Role
from tests.backend.conftest import Actors, AppFactory, FakeClock, add_user, bearer, services_of
from tests.backend.ocr_jobs import drain, job_of, page_events, runner, upload
from tests.backend.ocr_standin import Drip, Reply, StandIn, error_body
from tests.backend.training_support import add_run, writer_id_of

SEEDS = itertools.count(7100)
ANNA, ANNA_SLUG, ANNA_MODEL = "Anna Müller", "anna-mueller", "writer-anna-mueller-v2"
MODELS = "GET /models"


@pytest.fixture
def panel(app_factory: AppFactory, clock: FakeClock, standin: StandIn) -> Actors:
    """An admin and an archivist on an app whose OCR client talks to the stand-in."""
    client = app_factory(clock=clock, ocr_urls=standin.url, ocr_backoff_s=0.01, ocr_breaker_open_s=30)
    add_user(client, "admin", Role.ADMIN)
    add_user(client, "erika", Role.ARCHIVIST)
    return Actors(client, bearer(client, "admin"), bearer(client, "erika"))


def _entry(name: str, kind: str | None = "recognition", **more: Any) -> dict[str, Any]:
    return {"name": name, "kind": kind, "problem": None, "checking": False, **more}


def _offer(standin: StandIn, default: str | None, *entries: dict[str, Any]) -> None:
    standin.service.models = list(entries)
    standin.service.default_model = default


def _adopt(actors: Actors, model_name: str | None, run_id: int | None = None) -> None:
    with services_of(actors.client).db.sessions() as session:
        writer = session.scalars(select(Writer).where(Writer.slug == ANNA_SLUG)).one()
        writer.model_name, writer.model_run_id = model_name, run_id
        session.commit()


def _models(actors: Actors, document_id: int | None = None) -> dict[str, Any]:
    params = {"documentId": document_id} if document_id is not None else {}
    response = actors.client.get("/api/ocr/models", headers=actors.archivist, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_recognition_models_and_unchecked_files_are_offered_the_default_first(panel: Actors, standin: StandIn) -> None:
    _offer(
        standin,
        "tiny",
        _entry("zeta"),
        _entry("blla", "segmentation"),
        _entry("Alpha"),
        _entry("broken", problem="not a kraken model"),
        _entry("placed-by-hand", None, checking=True),
        _entry("tiny", None, checking=True),
    )
    document_id = upload(panel, next(SEEDS), pages=1)

    without = _models(panel)
    # A file placed by hand is offered while the service checks it (its kind is not known yet):
    # the default model often is one.
    assert [m["name"] for m in without["models"]] == ["tiny", "Alpha", "placed-by-hand", "zeta"]
    assert [m["default"] for m in without["models"]] == [True, False, False, False]
    assert (without["default"], without["preselected"], without["preselectedSource"]) == ("tiny", None, None)

    with_document = _models(panel, document_id)
    # No writer: the document is read with the default, so the default is offered.
    assert (with_document["preselected"], with_document["preselectedSource"]) == ("tiny", "default")


def test_the_writers_own_model_is_preselected_while_the_service_has_it(panel: Actors, standin: StandIn) -> None:
    document_id = upload(panel, next(SEEDS), pages=1, writer=ANNA)
    run_id = add_run(
        panel.client, TrainingKind.WRITER, ANNA_MODEL, (), writer_id=writer_id_of(panel.client, ANNA_SLUG), sequence=2
    )
    _adopt(panel, ANNA_MODEL, run_id)
    _offer(standin, "tiny", _entry("tiny"), _entry(ANNA_MODEL))

    found = _models(panel, document_id)
    assert (found["preselected"], found["preselectedSource"]) == (ANNA_MODEL, "writer")
    annas = next(m for m in found["models"] if m["name"] == ANNA_MODEL)
    # The panel names it "Anna Müller's model (v2)" in the reader's language from these.
    assert (annas["writer"]["name"], annas["runSequence"], annas["default"]) == (ANNA, 2, False)

    # An admin removed the writer's model from the service: the default is offered (and would read).
    _offer(standin, "tiny", _entry("tiny"))
    gone = _models(panel, document_id)
    assert (gone["preselected"], gone["preselectedSource"]) == ("tiny", "default")


def test_an_unknown_document_is_refused_before_the_service_is_asked(panel: Actors, standin: StandIn) -> None:
    response = panel.client.get("/api/ocr/models", headers=panel.archivist, params={"documentId": 987654})
    assert (response.status_code, response.json()["code"]) == (404, "DOCUMENT_NOT_FOUND")
    assert standin.service.count(MODELS) == 0


@pytest.mark.parametrize("status", [500, 503])
def test_the_service_unavailable_gives_the_calm_code_and_the_breaker_is_respected(
    panel: Actors, standin: StandIn, status: int
) -> None:
    # Failing answers until the breaker opens; then it answers no more calls.
    standin.service.plan(MODELS, *[Reply(status, error_body("INTERNAL_ERROR"))] * 50)
    for _ in range(12):
        response = panel.client.get("/api/ocr/models", headers=panel.archivist)
        assert (response.status_code, response.json()["code"]) == (503, "OCR_SERVICE_UNAVAILABLE")
    asked = standin.service.count(MODELS)
    assert services_of(panel.client).ocr.refuses_calls()
    again = panel.client.get("/api/ocr/models", headers=panel.archivist)
    assert (again.status_code, again.json()["code"]) == (503, "OCR_SERVICE_UNAVAILABLE")
    assert standin.service.count(MODELS) == asked  # the open breaker answered, not the service


def test_the_documents_job_is_found_the_running_one_first(panel: Actors, standin: StandIn) -> None:
    document_id = upload(panel, next(SEEDS), pages=2)
    url = f"/api/documents/{document_id}/ocr-job"
    assert panel.client.get(url, headers=panel.archivist).json() == {"job": None, "correctedLines": 0}

    started = panel.client.post(f"/api/documents/{document_id}/ocr", headers=panel.archivist)
    job_id = started.json()["jobId"]
    queued = panel.client.get(url, headers=panel.archivist).json()
    assert (queued["job"]["id"], queued["job"]["status"], queued["job"]["pagesTotal"]) == (job_id, "QUEUED", 2)

    standin.service.plan("POST /ocr/stream", Drip(page_events(2)))
    drain(runner(panel.client, standin.url))
    assert job_of(panel, job_id)["status"] == "DONE"
    lines = panel.client.get(f"/api/documents/{document_id}/lines", headers=panel.archivist).json()
    for line in lines[:3]:
        saved = panel.client.patch(
            f"/api/lines/{line['id']}", headers=panel.archivist, json={"text": "Liebe Anna", "version": line["version"]}
        )
        assert saved.status_code == 200, saved.text
    done = panel.client.get(url, headers=panel.archivist).json()
    assert (done["job"]["id"], done["job"]["status"], done["job"]["pagesDone"]) == (job_id, "DONE", 2)
    with services_of(panel.client).db.sessions() as session:
        corrected = session.scalars(select(Line.id).where(Line.text.is_not(None))).all()
    assert done["correctedLines"] == 3 <= len(corrected)

    # A second run: the newest job is the one found.
    second = panel.client.post(f"/api/documents/{document_id}/ocr", headers=panel.archivist).json()["jobId"]
    assert panel.client.get(url, headers=panel.archivist).json()["job"]["id"] == second


def test_an_older_job_requeued_by_a_retry_is_found_before_a_newer_finished_one(panel: Actors, standin: StandIn) -> None:
    document_id = upload(panel, next(SEEDS), pages=1)
    batch = panel.client.post("/api/ocr/batches", headers=panel.archivist, json={"documentIds": [document_id]})
    batch_id = batch.json()["batchId"]
    older = panel.client.get(f"/api/ocr/batches/{batch_id}", headers=panel.archivist).json()["jobs"][0]["id"]
    panel.client.post(f"/api/ocr/jobs/{older}/cancel", headers=panel.archivist)
    newer = panel.client.post(f"/api/documents/{document_id}/ocr", headers=panel.archivist).json()["jobId"]
    panel.client.post(f"/api/ocr/jobs/{newer}/cancel", headers=panel.archivist)
    retried = panel.client.post(
        f"/api/ocr/batches/{batch_id}/retry", headers=panel.archivist, json={"includeCancelled": True}
    )
    assert retried.json()["requeued"] == [older]
    found = panel.client.get(f"/api/documents/{document_id}/ocr-job", headers=panel.archivist).json()["job"]
    assert (found["id"], found["status"]) == (older, "QUEUED")


def test_a_trashed_documents_job_is_hidden_from_an_archivist(panel: Actors) -> None:
    document_id = upload(panel, next(SEEDS), pages=1)
    assert panel.client.delete(f"/api/documents/{document_id}", headers=panel.archivist).status_code == 204
    url = f"/api/documents/{document_id}/ocr-job"
    refused = panel.client.get(url, headers=panel.archivist)
    assert (refused.status_code, refused.json()["code"]) == (404, "DOCUMENT_NOT_FOUND")
    assert panel.client.get(url, headers=panel.admin).status_code == 200
    missing = panel.client.get("/api/documents/987654/ocr-job", headers=panel.admin)
    assert missing.json()["code"] == "DOCUMENT_NOT_FOUND"


# Each generated entry is one of these shapes; only the "usable" ones may be offered.
_SHAPES: dict[str, Any] = {
    "usable": lambda name: _entry(name),
    "usable, being checked": lambda name: _entry(name, None, checking=True),
    "segmentation": lambda name: _entry(name, "segmentation"),
    "refused": lambda name: _entry(name, problem="cannot load it"),
    "refused while checked": lambda name: _entry(name, None, checking=True, problem="not a model"),
    "odd kind": lambda name: _entry(name, "Recognition"),
    "no name": lambda name: {"kind": "recognition"},
    "name not text": lambda name: _entry(7),  # type: ignore[arg-type]
    "not an object": lambda name: [name, "recognition"],
    "nothing": lambda name: None,
}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.text(min_size=1, max_size=8), st.sampled_from(sorted(_SHAPES))), max_size=8),
    st.sampled_from(["list", "missing", "not a list"]),
)
def test_only_usable_recognition_entries_are_offered_whatever_the_listing_holds(
    shapes: list[tuple[str, str]], container: str
) -> None:
    entries = [_SHAPES[shape](name) for name, shape in shapes]
    listings: dict[str, dict[str, Any]] = {"list": {"models": entries}, "missing": {}, "not a list": {"models": "t"}}
    listing = listings[container]
    expected = [name for name, shape in shapes if shape.startswith("usable")] if container == "list" else []
    assert recognition_models(listing) == expected
