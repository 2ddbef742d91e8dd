"""OCR reads a writer's documents with the writer's own model, and says which model read what.

Against the scripted stand-in OCR service, which records the ``model`` field each
``/ocr/stream`` request carried; on SQLite and, with ``APP_TEST_DATABASE=postgresql``, on
PostgreSQL. The writer's model is set in the database as a writer run's adoption leaves it.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from sqlalchemy import event, select

from backend.documents.models import Document, Writer
from backend.ocr.models import ModelSource, OcrJob
from backend.training.models import RunStatus, TrainingKind
from tests.backend.conftest import Actors, FakeClock, services_of
from tests.backend.ocr_jobs import LEASE, drain, job_of, page_events, runner, upload
from tests.backend.ocr_standin import Drip, Reply, StandIn, error_body
from tests.backend.training_support import add_run, writer_id_of

STREAM = "POST /ocr/stream"
ANNA = "Anna Müller"
ANNA_MODEL = "writer-anna-mueller-v3"
SEEDS = itertools.count(3000)


def _start(actors: Actors, document_id: int, model: str | None = None) -> int:
    body = {"model": model} if model is not None else None
    response = actors.client.post(f"/api/documents/{document_id}/ocr", headers=actors.archivist, json=body)
    assert response.status_code == 202, response.text
    return int(response.json()["jobId"])


def _models_sent(standin: StandIn) -> list[str | None]:
    return [seen.fields.get("model") for seen in standin.service.seen if f"{seen.method} {seen.path}" == STREAM]


def _run(
    actors: Actors,
    kind: TrainingKind,
    model_name: str,
    sequence: int,
    writer_slug: str | None = None,
    status: RunStatus = RunStatus.DONE,
) -> int:
    """A training run's row as it stands once the run installed its model."""
    writer_id = writer_id_of(actors.client, writer_slug) if writer_slug else None
    return add_run(actors.client, kind, model_name, (), writer_id=writer_id, status=status, sequence=sequence)


def _adopt(actors: Actors, slug: str, model_name: str | None, run_id: int | None = None) -> None:
    """What adopting a writer run leaves behind: the writer's model."""
    with services_of(actors.client).db.sessions() as session:
        writer = session.scalars(select(Writer).where(Writer.slug == slug)).one()
        writer.model_name, writer.model_run_id = model_name, run_id
        session.commit()


def _with_model(events: tuple[dict[str, Any], ...], models: dict[int, tuple[str, int]]) -> tuple[dict[str, Any], ...]:
    """The stream with each page event naming the model and version that read it, as the service does."""
    named = []
    for item in events:
        if item["type"] == "page" and item["page"] in models:
            name, version = models[item["page"]]
            item = {**item, "model": name, "modelVersion": version}
        named.append(item)
    return tuple(named)


@pytest.mark.parametrize(
    ("writer", "writer_model", "pick", "sent", "source"),
    [
        (ANNA, ANNA_MODEL, None, ANNA_MODEL, ModelSource.WRITER),
        (ANNA, None, None, None, ModelSource.DEFAULT),
        (None, None, None, None, ModelSource.DEFAULT),
        (ANNA, ANNA_MODEL, "kurrent", "kurrent", ModelSource.REQUESTED),
        (ANNA, None, "kurrent", "kurrent", ModelSource.REQUESTED),
        (None, None, "kurrent", "kurrent", ModelSource.REQUESTED),
    ],
)
@pytest.mark.parametrize("adopted_while_queued", [False, True])
def test_a_job_reads_with_the_pick_else_the_writers_model_else_the_default(
    actors: Actors,
    standin: StandIn,
    writer: str | None,
    writer_model: str | None,
    pick: str | None,
    sent: str | None,
    source: ModelSource,
    adopted_while_queued: bool,
) -> None:
    document_id = upload(actors, next(SEEDS), pages=2, writer=writer)
    if writer_model and not adopted_while_queued:
        _adopt(actors, "anna-mueller", writer_model)
    job_id = _start(actors, document_id, pick)
    queued = job_of(actors, job_id)
    # Nothing is decided before a runner takes the job up.
    assert (queued["modelRequested"], queued["modelSource"], queued["modelUsed"]) == (pick, None, None)
    if writer_model and adopted_while_queued:
        _adopt(actors, "anna-mueller", writer_model)
    standin.service.plan(STREAM, Drip(page_events(2)))
    drain(runner(actors.client, standin.url))

    assert _models_sent(standin) == [sent]
    job = job_of(actors, job_id)
    assert job["status"] == "DONE"
    assert (job["modelRequested"], job["modelSource"], job["modelUsed"], job["modelNote"]) == (
        pick,
        source.value,
        sent,
        None,
    )
    pages = actors.client.get(f"/api/documents/{document_id}/pages", headers=actors.archivist).json()
    # The stand-in's page events name no model: the page records the name sent, else the default.
    assert [page["model"]["name"] for page in pages] == [sent or "default"] * 2


def test_a_resumed_job_keeps_the_writers_model_it_started_with(
    actors: Actors, standin: StandIn, clock: FakeClock
) -> None:
    document_id = upload(actors, next(SEEDS), pages=3, writer=ANNA)
    _adopt(actors, "anna-mueller", ANNA_MODEL)
    job_id = _start(actors, document_id)
    dead = runner(actors.client, standin.url, owner="dead", clock=clock)
    [claimed] = dead.queue.claim(1, clock())
    assert (claimed.model, claimed.model_source) == (ANNA_MODEL, ModelSource.WRITER)
    events = _with_model(page_events(3), {1: (ANNA_MODEL, 1), 2: (ANNA_MODEL, 1), 3: (ANNA_MODEL, 1)})
    page_one = [item for item in events if item["type"] == "line" and item["page"] == 1]
    dead.queue.store_page(claimed, 1, page_one, model=ANNA_MODEL, model_version="1", now=clock())
    # A better model of hers is adopted while the job is half read; then its runner's lease runs out.
    _adopt(actors, "anna-mueller", "writer-anna-mueller-v4")
    clock.advance(LEASE.total_seconds() + 1)
    standin.service.plan(STREAM, Drip(events))
    drain(runner(actors.client, standin.url, owner="heir", clock=clock))

    [resumed] = [seen.fields for seen in standin.service.seen]
    assert resumed == {"model": ANNA_MODEL, "firstPage": "2"}
    job = job_of(actors, job_id)
    assert (job["status"], job["attempts"], job["modelUsed"], job["modelSource"]) == ("DONE", 2, ANNA_MODEL, "writer")
    pages = actors.client.get(f"/api/documents/{document_id}/pages", headers=actors.archivist).json()
    assert [page["model"]["name"] for page in pages] == [ANNA_MODEL] * 3


def test_a_resumed_job_read_with_the_default_goes_on_with_the_model_its_pages_were_read_with(
    actors: Actors, standin: StandIn, clock: FakeClock
) -> None:
    """Another default adopted mid-run does not read the rest of the document: the service named
    the model on each page event, and the resumed job asks for that one by name."""
    document_id = upload(actors, next(SEEDS), pages=3, writer=ANNA)
    job_id = _start(actors, document_id)
    dead = runner(actors.client, standin.url, owner="dead", clock=clock)
    [claimed] = dead.queue.claim(1, clock())
    assert (claimed.model, claimed.model_source) == (None, ModelSource.DEFAULT)
    events = _with_model(page_events(3), {1: ("archive-v2", 2), 2: ("archive-v2", 2), 3: ("archive-v2", 2)})
    page_one = [item for item in events if item["type"] == "line" and item["page"] == 1]
    dead.queue.store_page(claimed, 1, page_one, model="archive-v2", model_version="2", now=clock())
    clock.advance(LEASE.total_seconds() + 1)
    standin.service.plan(STREAM, Drip(events))
    drain(runner(actors.client, standin.url, owner="heir", clock=clock))

    assert [seen.fields for seen in standin.service.seen] == [{"model": "archive-v2", "firstPage": "2"}]
    job = job_of(actors, job_id)
    assert (job["status"], job["modelSource"], job["modelUsed"], job["modelRequested"]) == (
        "DONE",
        "default",
        "archive-v2",
        None,
    )


@pytest.mark.parametrize("code", ["UNKNOWN_MODEL", "MODEL_NOT_FOUND", "INVALID_MODEL", "WRONG_MODEL_KIND"])
def test_a_writers_model_the_service_lacks_falls_back_to_the_default_with_a_note(
    actors: Actors, standin: StandIn, code: str
) -> None:
    document_id = upload(actors, next(SEEDS), pages=2, writer=ANNA)
    _adopt(actors, "anna-mueller", ANNA_MODEL)
    job_id = _start(actors, document_id)
    standin.service.plan(
        STREAM, Reply(422, error_body(code, f"There is no model named '{ANNA_MODEL}'.")), Drip(page_events(2))
    )
    drain(runner(actors.client, standin.url))

    assert _models_sent(standin) == [ANNA_MODEL, None]
    job = job_of(actors, job_id)
    assert (job["status"], job["errorCode"], job["pagesDone"]) == ("DONE", None, 2)
    assert (job["modelSource"], job["modelUsed"]) == ("writer", None)
    assert ANNA_MODEL in job["modelNote"] and code in job["modelNote"] and "default model" in job["modelNote"]
    pages = actors.client.get(f"/api/documents/{document_id}/pages", headers=actors.archivist).json()
    assert [(page["model"]["name"], page["modelLabel"]) for page in pages] == [("default", "Default model")] * 2


def test_a_resumed_job_whose_model_is_gone_falls_back_for_the_rest(
    actors: Actors, standin: StandIn, clock: FakeClock
) -> None:
    document_id = upload(actors, next(SEEDS), pages=2)
    job_id = _start(actors, document_id)
    dead = runner(actors.client, standin.url, owner="dead", clock=clock)
    [claimed] = dead.queue.claim(1, clock())
    events = page_events(2)
    page_one = [item for item in events if item["type"] == "line" and item["page"] == 1]
    dead.queue.store_page(claimed, 1, page_one, model="archive-v2", model_version="2", now=clock())
    clock.advance(LEASE.total_seconds() + 1)
    standin.service.plan(STREAM, Reply(422, error_body("UNKNOWN_MODEL")), Drip(events))
    drain(runner(actors.client, standin.url, owner="heir", clock=clock))

    assert [seen.fields for seen in standin.service.seen] == [
        {"model": "archive-v2", "firstPage": "2"},
        {"firstPage": "2"},
    ]
    job = job_of(actors, job_id)
    assert (job["status"], job["modelUsed"]) == ("DONE", None)
    assert "archive-v2" in job["modelNote"]


@pytest.mark.parametrize(
    ("pick", "code"),
    [
        # A person's pick is never swapped for another model: the job fails with the service's word.
        ("kurrent", "UNKNOWN_MODEL"),
        # Another refusal of the document is not about the model: no second try with the default.
        (None, "CORRUPT_DOCUMENT"),
    ],
)
def test_no_fallback_for_a_persons_pick_or_a_refusal_of_the_document(
    actors: Actors, standin: StandIn, pick: str | None, code: str
) -> None:
    document_id = upload(actors, next(SEEDS), pages=1, writer=ANNA)
    _adopt(actors, "anna-mueller", ANNA_MODEL)
    job_id = _start(actors, document_id, pick)
    standin.service.plan(STREAM, Reply(422, error_body(code)), Drip(page_events(1)))
    drain(runner(actors.client, standin.url))

    assert _models_sent(standin) == [pick or ANNA_MODEL]
    job = job_of(actors, job_id)
    assert (job["status"], job["errorCode"], job["modelNote"]) == ("FAILED", code, None)
    assert job["modelUsed"] == (pick or ANNA_MODEL)


def test_a_picked_model_is_not_checked_against_the_service_when_the_job_starts(
    actors: Actors, standin: StandIn
) -> None:
    """As before: the pick is a name of the service's shape; whether the service has it is its word."""
    document_id = upload(actors, next(SEEDS), pages=1)
    job_id = _start(actors, document_id, "no-such-model")
    assert standin.service.seen == []
    assert job_of(actors, job_id)["modelRequested"] == "no-such-model"


def _count_statements(actors: Actors, needle: str) -> tuple[list[str], Any]:
    engine = services_of(actors.client).db.engine
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if needle in statement:
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    return statements, lambda: event.remove(engine, "before_cursor_execute", seen)


def test_pages_and_lines_say_which_model_read_them_in_words(actors: Actors, standin: StandIn) -> None:
    document_id = upload(actors, next(SEEDS), pages=5, writer=ANNA)
    anna_run = _run(actors, TrainingKind.WRITER, ANNA_MODEL, 3, "anna-mueller")
    _run(actors, TrainingKind.RECOGNITION, "archive-v2", 2)
    # A run that failed installed nothing; a name repeated by a later finished run counts once, the later.
    _run(actors, TrainingKind.RECOGNITION, "kurrent", 7, status=RunStatus.FAILED)
    _run(actors, TrainingKind.RECOGNITION, "archive-v2", 2)
    _adopt(actors, "anna-mueller", ANNA_MODEL, anna_run)
    read_by = {1: (ANNA_MODEL, 5), 2: ("archive-v2", 1), 3: ("kurrent", 0), 4: (ANNA_MODEL, 6)}
    standin.service.plan(STREAM, Drip(_with_model(page_events(5), read_by)))
    _start(actors, document_id)
    drain(runner(actors.client, standin.url))

    anna = {"id": _writer_id(actors, "anna-mueller"), "slug": "anna-mueller", "name": ANNA}
    expected = [
        ({"name": ANNA_MODEL, "version": "5", "writer": anna, "runSequence": 3}, "Anna Müller's model (v3)"),
        ({"name": "archive-v2", "version": "1", "writer": None, "runSequence": 2}, "Archive model (v2)"),
        ({"name": "kurrent", "version": "0", "writer": None, "runSequence": None}, "kurrent"),
        ({"name": ANNA_MODEL, "version": "6", "writer": anna, "runSequence": 3}, "Anna Müller's model (v3)"),
        # The page event named no model: the name the job sent (the writer's).
        ({"name": ANNA_MODEL, "version": None, "writer": anna, "runSequence": 3}, "Anna Müller's model (v3)"),
    ]
    statements, stop = _count_statements(actors, "training_runs")
    try:
        pages = actors.client.get(f"/api/documents/{document_id}/pages", headers=actors.archivist).json()
        assert len(statements) == 1
        lines = actors.client.get(f"/api/documents/{document_id}/lines", headers=actors.archivist).json()
        assert len(statements) == 2
    finally:
        stop()
    assert [(page["number"], page["model"], page["modelLabel"]) for page in pages] == [
        (number, *model) for number, model in enumerate(expected, 1)
    ]
    assert all(page["ocrAt"] is not None for page in pages)
    assert [(line["page"], line["model"], line["modelLabel"]) for line in lines] == [
        (number, *model) for number, model in enumerate(expected, 1) for _ in range(2)
    ]
    assert [(line["modelName"], line["modelVersion"]) for line in lines] == [
        (model["name"], model["version"]) for model, _ in expected for _ in range(2)
    ]
    # A saved correction answers with the line's model too.
    saved = actors.client.patch(
        f"/api/lines/{lines[2]['id']}", headers=actors.archivist, json={"text": "x", "version": 1}
    )
    assert saved.status_code == 200, saved.text
    assert (saved.json()["model"], saved.json()["modelLabel"]) == expected[1]


def test_an_unread_page_has_no_model(actors: Actors) -> None:
    document_id = upload(actors, next(SEEDS), pages=2)
    pages = actors.client.get(f"/api/documents/{document_id}/pages", headers=actors.archivist).json()
    assert [(page["model"], page["modelLabel"], page["ocrAt"]) for page in pages] == [(None, None, None)] * 2


def _writer_id(actors: Actors, slug: str) -> int:
    with services_of(actors.client).db.sessions() as session:
        return int(session.scalars(select(Writer.id).where(Writer.slug == slug)).one())


def test_the_writer_decides_per_document(actors: Actors, standin: StandIn) -> None:
    """A batch over several writers' documents: each document is read with its own writer's model."""
    names = {"Anna Müller": ANNA_MODEL, "Bernd Schulz": None, "Clara Weiß": "writer-clara-weiss-v1"}
    documents = {name: upload(actors, next(SEEDS), pages=1, writer=name) for name in names}
    for name, model in names.items():
        if model:
            with services_of(actors.client).db.sessions() as session:
                document = session.get_one(Document, documents[name])
                assert document.writer is not None
                _adopt(actors, document.writer.slug, model)
    response = actors.client.post(
        "/api/ocr/batches", headers=actors.archivist, json={"documentIds": list(documents.values())}
    )
    assert response.status_code == 202, response.text
    standin.service.plan(STREAM, *(Drip(page_events(1)) for _ in names))
    drain(runner(actors.client, standin.url))
    # One runner, jobs claimed in id order: the documents' order.
    assert _models_sent(standin) == list(names.values())
    batch = actors.client.get(f"/api/ocr/batches/{response.json()['batchId']}", headers=actors.archivist).json()
    assert [job["modelUsed"] for job in batch["jobs"]] == list(names.values())


def test_a_job_taken_up_again_before_it_stored_a_page_uses_the_model_adopted_meanwhile(
    actors: Actors, standin: StandIn, clock: FakeClock
) -> None:
    document_id = upload(actors, next(SEEDS), pages=2, writer=ANNA)
    _adopt(actors, "anna-mueller", ANNA_MODEL)
    job_id = _start(actors, document_id)
    dead = runner(actors.client, standin.url, owner="dead", clock=clock)
    [claimed] = dead.queue.claim(1, clock())
    assert claimed.model == ANNA_MODEL
    # Its runner died before the first page was stored: nothing of the document is read yet.
    _adopt(actors, "anna-mueller", "writer-anna-mueller-v4")
    clock.advance(LEASE.total_seconds() + 1)
    standin.service.plan(STREAM, Drip(page_events(2)))
    drain(runner(actors.client, standin.url, owner="heir", clock=clock))

    assert [seen.fields for seen in standin.service.seen] == [{"model": "writer-anna-mueller-v4"}]
    job = job_of(actors, job_id)
    assert (job["status"], job["attempts"], job["modelUsed"]) == ("DONE", 2, "writer-anna-mueller-v4")


@pytest.mark.parametrize(("pick", "sent"), [(None, ANNA_MODEL), ("kurrent", "kurrent")])
def test_a_job_with_pages_stored_before_its_model_was_recorded_reads_on_with_that_model(
    actors: Actors, standin: StandIn, clock: FakeClock, pick: str | None, sent: str
) -> None:
    """A job left half read by a backend that did not record a job's model yet (before
    migration 0005): the pick if there was one, else the model its pages were read with."""
    document_id = upload(actors, next(SEEDS), pages=2, writer=ANNA)
    job_id = _start(actors, document_id, pick)
    dead = runner(actors.client, standin.url, owner="dead", clock=clock)
    [claimed] = dead.queue.claim(1, clock())
    events = page_events(2)
    page_one = [item for item in events if item["type"] == "line" and item["page"] == 1]
    dead.queue.store_page(claimed, 1, page_one, model=sent, model_version="1", now=clock())
    with services_of(actors.client).db.sessions() as session:
        job = session.get_one(OcrJob, job_id)
        job.model_source = job.model_used = None
        session.commit()
    _adopt(actors, "anna-mueller", "writer-anna-mueller-v4")
    clock.advance(LEASE.total_seconds() + 1)
    standin.service.plan(STREAM, Drip(events))
    drain(runner(actors.client, standin.url, owner="heir", clock=clock))

    assert [seen.fields for seen in standin.service.seen] == [{"model": sent, "firstPage": "2"}]
    assert job_of(actors, job_id)["modelSource"] == ("requested" if pick else "default")
