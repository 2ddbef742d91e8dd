"""OCR jobs end to end: API → database queue → runner → the scripted stand-in OCR service on loopback."""

from __future__ import annotations

import asyncio
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import OperationalError

from backend.db import skip_locked
from backend.documents.models import Line, Page
from backend.ocr.models import JobStatus, OcrJob
from backend.ocr.queue import JobQueue, LeaseLost
from backend.ocr.routes import progress_events, read_job
from backend.ocr_client import BreakerConfig
from backend.ocr_client.breaker import BreakerState, Outcome
from backend.users.models import Role
from tests.backend.conftest import DATABASE_KIND, Actors, AppFactory, FakeClock, add_user, bearer, services_of
from tests.backend.ocr_jobs import LEASE, drain, job_counts, job_of, page_events, runner, upload
from tests.backend.ocr_standin import Drip, Reply, StandIn, error_body

STREAM = "POST /ocr/stream"


def _start(actors: Actors, document_id: int, **body: str) -> int:
    response = actors.client.post(f"/api/documents/{document_id}/ocr", headers=actors.archivist, json=body or None)
    assert response.status_code == 202, response.text
    return int(response.json()["jobId"])


def _texts(actors: Actors, document_id: int) -> list[tuple[int, int, str]]:
    response = actors.client.get(f"/api/documents/{document_id}/lines", headers=actors.archivist)
    return [(line["page"], line["orderIndex"], line["currentText"]) for line in response.json()]


def _expected(pages: int, per_page: int = 2, tag: str = "") -> list[tuple[int, int, str]]:
    return [(p, i, f"{tag}p{p} l{i}") for p in range(1, pages + 1) for i in range(per_page)]


def test_a_document_is_read_page_by_page_with_the_model_per_page(actors: Actors, standin: StandIn) -> None:
    document_id = upload(actors, 1, pages=3)
    standin.service.plan(STREAM, Drip(page_events(3)))
    job_id = _start(actors, document_id, model="tiny")
    assert job_of(actors, job_id)["status"] == "QUEUED"
    drain(runner(actors.client, standin.url))
    job = job_of(actors, job_id)
    assert (job["status"], job["pagesDone"], job["pagesTotal"], job["attempts"]) == ("DONE", 3, 3, 1)
    assert _texts(actors, document_id) == _expected(3)
    assert standin.service.seen[0].fields == {"model": "tiny"}
    services = services_of(actors.client)
    with services.db.sessions() as session:
        models = session.execute(select(Page.ocr_model).where(Page.document_id == document_id)).scalars().all()
    assert models == ["tiny"] * 3
    document = actors.client.get(f"/api/documents/{document_id}", headers=actors.archivist).json()
    assert document["status"] == "DONE"


def test_a_database_that_does_not_answer_for_a_moment_does_not_stop_the_runner(
    actors: Actors, standin: StandIn
) -> None:
    """A PostgreSQL restart must not end the runner's loop: queued documents would wait for a
    backend restart. The claim fails twice, then the database answers and the job is read."""
    document_id = upload(actors, 1, pages=1)
    standin.service.plan(STREAM, Drip(page_events(1)))
    job_id = _start(actors, document_id)

    async def short(_: float) -> None:
        await asyncio.sleep(0.01)

    job_runner = runner(actors.client, standin.url, sleep=short)
    claim, failures = job_runner.queue.claim, [OperationalError("SELECT", {}, Exception("server closed"))] * 2

    def flaky(*args: Any) -> Any:
        if failures:
            raise failures.pop()
        return claim(*args)

    job_runner.queue.claim = flaky  # type: ignore[method-assign]

    async def go() -> None:
        loop = asyncio.create_task(job_runner.run())
        try:
            for _ in range(6000):  # a guard against a hang only; the job ends in well under a second
                if loop.done() or job_of(actors, job_id)["status"] == "DONE":
                    break
                await asyncio.sleep(0.01)
            assert not loop.done(), loop.exception()
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
            await job_runner.stop()
            await job_runner.client.aclose()

    asyncio.run(go())
    assert not failures
    assert job_of(actors, job_id)["status"] == "DONE"


def test_each_page_records_the_model_and_version_its_page_event_names(actors: Actors, standin: StandIn) -> None:
    """The service names on every page event the model and version that read it; the backend
    keeps them on the page and its lines. A page event naming none usable (an older service, or
    nonsense) keeps the requested name with the version unknown."""
    document_id = upload(actors, 1, pages=4)
    named = [
        {"model": "kurrent", "modelVersion": 3},
        {"model": "kurrent", "modelVersion": 0},
        {"model": "x" * 101, "modelVersion": 4},  # longer than any model name the service allows
        {"model": "kurrent", "modelVersion": "3; DROP TABLE pages"},
    ]
    events = [{**event, **named[event["page"] - 1]} if event["type"] == "page" else event for event in page_events(4)]
    standin.service.plan(STREAM, Drip(tuple(events)))
    _start(actors, document_id, model="tiny")
    drain(runner(actors.client, standin.url))
    expected = [("kurrent", "3"), ("kurrent", "0"), ("tiny", None), ("kurrent", None)]
    services = services_of(actors.client)
    with services.db.sessions() as session:
        pages = session.execute(
            select(Page.number, Page.ocr_model, Page.ocr_model_version)
            .where(Page.document_id == document_id)
            .order_by(Page.number)
        ).all()
        lines = session.execute(
            select(Page.number, Line.model_name, Line.model_version)
            .join(Line, Line.page_id == Page.id)
            .where(Page.document_id == document_id)
            .order_by(Page.number, Line.order_index)
        ).all()
    assert [tuple(row) for row in pages] == [(n, *model) for n, model in enumerate(expected, 1)]
    assert [tuple(row) for row in lines] == [(n, *model) for n, model in enumerate(expected, 1) for _ in range(2)]


@pytest.mark.parametrize("status", [400, 413, 415, 422])
def test_a_4xx_fails_the_document_with_the_services_word_and_is_not_retried(
    actors: Actors, standin: StandIn, status: int
) -> None:
    document_id = upload(actors, 2, pages=1)
    standin.service.plan(STREAM, Reply(status, error_body("CORRUPT_DOCUMENT", "The PDF is broken.")))
    job_id = _start(actors, document_id)
    drain(runner(actors.client, standin.url, attempts=4))
    job = job_of(actors, job_id)
    assert (job["status"], job["errorCode"], job["errorMessage"]) == (
        "FAILED",
        "CORRUPT_DOCUMENT",
        "The PDF is broken.",
    )
    assert standin.service.count(STREAM) == 1


def test_a_5xx_uses_up_the_retries_and_fails_the_document_as_retriable(actors: Actors, standin: StandIn) -> None:
    document_id = upload(actors, 3, pages=1)
    standin.service.plan(STREAM, *[Reply(500, error_body("OCR_FAILED", "worker died"))] * 4)
    job_id = _start(actors, document_id)
    drain(runner(actors.client, standin.url, attempts=4))
    job = job_of(actors, job_id)
    assert (job["status"], job["errorCode"]) == ("FAILED", "OCR_SERVICE_UNAVAILABLE")
    assert standin.service.count(STREAM) == 4


def test_breaker_open_mid_batch_fails_the_rest_and_retry_requeues_exactly_those(
    actors: Actors, standin: StandIn
) -> None:
    ids = [upload(actors, 10 + n, pages=2) for n in range(4)]
    standin.service.plan(STREAM, Drip(page_events(2)), Reply(500, error_body("OCR_FAILED", "down")))
    response = actors.client.post("/api/ocr/batches", headers=actors.archivist, json={"documentIds": ids})
    assert response.status_code == 202, response.text
    batch_id = response.json()["batchId"]
    # Two calls in the window, one failed: 50 % opens the breaker; the last two never reach the network.
    breaker = BreakerConfig(window_size=2, minimum_calls=2, failure_rate_percent=50, open_wait_s=600)
    drain(runner(actors.client, standin.url, breaker=breaker))
    assert standin.service.count(STREAM) == 2
    batch = actors.client.get(f"/api/ocr/batches/{batch_id}", headers=actors.archivist).json()
    outcomes = [(job["documentId"], job["status"], job["errorCode"]) for job in batch["jobs"]]
    assert outcomes == [(ids[0], "DONE", None)] + [(i, "FAILED", "OCR_SERVICE_UNAVAILABLE") for i in ids[1:]]
    assert (batch["pagesDone"], batch["pagesTotal"]) == (2, 8)
    assert batch["counts"] == {"QUEUED": 0, "RUNNING": 0, "DONE": 1, "FAILED": 3, "CANCELLED": 0}

    retried = actors.client.post(f"/api/ocr/batches/{batch_id}/retry", headers=actors.archivist)
    assert retried.status_code == 202
    failed_jobs = [job["id"] for job in batch["jobs"][1:]]
    assert retried.json() == {"batchId": batch_id, "requeued": failed_jobs}
    standin.service.plan(STREAM, *[Drip(page_events(2))] * 3)
    drain(runner(actors.client, standin.url))
    assert standin.service.count(STREAM) == 5
    assert job_counts(actors.client) == {JobStatus.DONE: 4}
    for document_id in ids:
        assert _texts(actors, document_id) == _expected(2)


def _open_breaker(actors: Actors) -> None:
    breaker = services_of(actors.client).ocr.replicas.replicas[0].breaker
    while breaker.state.name != "OPEN":
        permit = breaker.try_acquire()
        assert permit is not None
        breaker.record(permit, Outcome.FAILURE)


def test_starting_ocr_while_the_breaker_is_open_is_503_and_creates_no_job(actors: Actors) -> None:
    document_id = upload(actors, 4, pages=1)
    _open_breaker(actors)
    for url, body in (
        (f"/api/documents/{document_id}/ocr", None),
        ("/api/ocr/batches", {"documentIds": [document_id]}),
    ):
        response = actors.client.post(url, headers=actors.archivist, json=body)
        assert (response.status_code, response.json()["code"]) == (503, "OCR_SERVICE_UNAVAILABLE")
    assert job_counts(actors.client) == {}


def test_starting_ocr_after_the_breakers_open_wait_is_accepted_and_its_job_is_the_probe(
    app_factory: AppFactory, clock: FakeClock
) -> None:
    # Found by the fault tests: an open breaker says OPEN until a call probes it, and with every
    # job failed nothing calls, so starting OCR (and the batch's retry) answered 503 for ever.
    client = app_factory(clock=clock, ocr_breaker_open_s=0)
    add_user(client, "admin", Role.ADMIN)
    add_user(client, "erika", Role.ARCHIVIST)
    actors = Actors(client, bearer(client, "admin"), bearer(client, "erika"))
    document_id = upload(actors, 4, pages=1)
    _open_breaker(actors)
    assert services_of(client).ocr.state().state is BreakerState.OPEN
    started = client.post(f"/api/documents/{document_id}/ocr", headers=actors.archivist)
    assert started.status_code == 202, started.text
    assert job_counts(client) == {JobStatus.QUEUED: 1}


def test_ocr_twice_at_once_is_409_naming_the_running_job(actors: Actors) -> None:
    document_id = upload(actors, 5, pages=1)
    job_id = _start(actors, document_id)
    response = actors.client.post(f"/api/documents/{document_id}/ocr", headers=actors.archivist)
    assert (response.status_code, response.json()["code"]) == (409, "OCR_ALREADY_RUNNING")
    assert response.json()["details"] == {"jobIds": [job_id]}


@pytest.mark.parametrize("seed", range(6))
def test_a_broken_stream_resumes_at_the_first_missing_page(actors: Actors, standin: StandIn, seed: int) -> None:
    rng = random.Random(seed)
    pages, per_page = rng.randint(2, 6), rng.randint(0, 3)
    events = page_events(pages, per_page)
    # Dies somewhere after the first event and before "done".
    standin.service.plan(STREAM, Drip(events, die_after=rng.randint(1, len(events) - 1)), Drip(events))
    document_id = upload(actors, 100 + seed, pages=pages)
    job_id = _start(actors, document_id)
    drain(runner(actors.client, standin.url))
    job = job_of(actors, job_id)
    assert (job["status"], job["pagesDone"], job["attempts"]) == ("DONE", pages, 2)
    assert _texts(actors, document_id) == _expected(pages, per_page)


def test_a_runner_killed_mid_document_is_replaced_after_its_lease(
    actors: Actors, standin: StandIn, clock: FakeClock
) -> None:
    document_id = upload(actors, 6, pages=4)
    job_id = _start(actors, document_id)
    services = services_of(actors.client)
    dead = runner(actors.client, standin.url, owner="dead", clock=clock)
    # The dead runner claimed the job and stored two pages, then vanished (its lease is left behind).
    [claimed] = dead.queue.claim(1, clock())
    events = page_events(4)
    for page in (1, 2):
        lines = [e for e in events if e["type"] == "line" and e["page"] == page]
        dead.queue.store_page(claimed, page, lines, model="default", model_version=None, now=clock())
    standin.service.plan(STREAM, Drip(events))
    heir = runner(actors.client, standin.url, owner="heir", clock=clock)
    drain(heir)  # the lease is still alive: nothing to take
    assert standin.service.count(STREAM) == 0
    assert job_of(actors, job_id)["status"] == "RUNNING"
    clock.advance(LEASE.total_seconds() + 1)
    drain(runner(actors.client, standin.url, owner="heir", clock=clock))
    job = job_of(actors, job_id)
    assert (job["status"], job["pagesDone"], job["attempts"]) == ("DONE", 4, 2)
    assert _texts(actors, document_id) == _expected(4)
    # The dead runner waking up changes nothing: its lease is gone.
    with pytest.raises(LeaseLost):
        dead.queue.store_page(claimed, 3, [], model="default", model_version=None, now=clock())
    with services.db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Line)) == 8
    assert job_counts(actors.client) == {JobStatus.DONE: 1}


def test_rerunning_ocr_replaces_the_ocr_text_and_keeps_every_correction(actors: Actors, standin: StandIn) -> None:
    document_id = upload(actors, 7, pages=2)
    standin.service.plan(STREAM, Drip(page_events(2, 3)), Drip(page_events(2, 2, tag="new ")))
    _start(actors, document_id)
    drain(runner(actors.client, standin.url))
    lines = actors.client.get(f"/api/documents/{document_id}/lines", headers=actors.archivist).json()
    # Correct the first line of page 1 and the third of page 2 (a position the new reading lacks).
    for line in (lines[0], lines[5]):
        saved = actors.client.patch(
            f"/api/lines/{line['id']}", headers=actors.archivist, json={"text": "Liebe Mutter", "version": 1}
        )
        assert saved.status_code == 200, saved.text
    _start(actors, document_id)
    drain(runner(actors.client, standin.url))
    after = actors.client.get(f"/api/documents/{document_id}/lines", headers=actors.archivist).json()
    got = [(line["page"], line["orderIndex"], line["ocrText"], line["text"]) for line in after]
    assert got == [
        (1, 0, "new p1 l0", "Liebe Mutter"),
        (1, 1, "new p1 l1", None),
        (2, 0, "new p2 l0", None),
        (2, 1, "new p2 l1", None),
        (2, 2, "p2 l2", "Liebe Mutter"),
    ]
    assert after[0]["id"] == lines[0]["id"] and after[0]["version"] == 2


def test_progress_events_one_per_page_then_the_end(actors: Actors, standin: StandIn) -> None:
    document_id = upload(actors, 8, pages=3)
    standin.service.plan(STREAM, Drip(page_events(3)))
    job_id = _start(actors, document_id)
    drain(runner(actors.client, standin.url))
    with actors.client.stream("GET", f"/api/ocr/jobs/{job_id}/events", headers=actors.archivist) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    events = [block.split("\n") for block in body.strip().split("\n\n")]
    assert [lines[0] for lines in events] == ["event: page"] * 3 + ["event: end"]
    # The job had ended when the stream first looked: nothing left to estimate.
    assert events[1][1] == 'data: {"page": 2, "pagesDone": 2, "pagesTotal": 3, "etaSeconds": null}'
    assert '"status": "DONE"' in events[3][1]


def test_a_runner_takes_no_more_jobs_than_its_concurrency(actors: Actors, standin: StandIn) -> None:
    ids = [upload(actors, 20 + n, pages=1) for n in range(5)]
    actors.client.post("/api/ocr/batches", headers=actors.archivist, json={"documentIds": ids})
    job_runner = runner(actors.client, standin.url, concurrency=2)

    async def go() -> tuple[int, int, dict[JobStatus, int], dict[JobStatus, int]]:
        first = await job_runner.tick()
        second = await job_runner.tick()
        during = job_counts(actors.client)
        await job_runner.stop()
        await job_runner.client.aclose()
        return first, second, during, job_counts(actors.client)

    first, second, during, after = asyncio.run(go())
    assert (first, second) == (2, 0)
    assert during == {JobStatus.RUNNING: 2, JobStatus.QUEUED: 3}
    # A runner that stops gives its jobs back at once rather than leaving them to the lease.
    assert after == {JobStatus.QUEUED: 5}


@pytest.mark.parametrize("seed", range(3))
def test_two_runners_never_take_the_same_job(actors: Actors, seed: int) -> None:
    rng = random.Random(seed)
    ids = [upload(actors, 1000 * (seed + 1) + n, pages=1) for n in range(rng.randint(8, 16))]
    actors.client.post("/api/ocr/batches", headers=actors.archivist, json={"documentIds": ids})
    services = services_of(actors.client)
    now = services.clock()
    queues = [JobQueue(services.db, services.lines, f"runner-{n}", LEASE) for n in range(2)]

    def take(queue: JobQueue) -> list[int]:
        taken: list[int] = []
        while True:
            claimed = queue.claim(rng.randint(1, 3), now)
            if not claimed:
                return taken
            taken += [job.job_id for job in claimed]

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(take, queues)
    assert set(a).isdisjoint(b)
    with services.db.sessions() as session:
        all_jobs = session.scalars(select(OcrJob.id)).all()
        owners = dict(session.execute(select(OcrJob.id, OcrJob.lease_owner)).all())
    assert sorted(a + b) == sorted(all_jobs)
    assert all(owners[i] == "runner-0" for i in a) and all(owners[i] == "runner-1" for i in b)


def test_the_apps_own_runner_runs_a_job_started_over_the_api(app_factory: AppFactory, standin: StandIn) -> None:
    client = app_factory(ocr_jobs_concurrency=1, ocr_urls=standin.url, ocr_poll_s=0.02)
    add_user(client, "erika", Role.ARCHIVIST)
    actors = Actors(client, {}, bearer(client, "erika"))
    document_id = upload(actors, 9, pages=2)
    standin.service.plan(STREAM, Drip(page_events(2)))
    job_id = _start(actors, document_id)
    # The progress stream ends only when the job has: no sleeping, no guessing how long it takes.
    with client.stream("GET", f"/api/ocr/jobs/{job_id}/events", headers=actors.archivist) as response:
        body = response.read().decode()
    assert body.count("event: page") == 2 and body.count("event: end") == 1
    assert job_of(actors, job_id)["status"] == "DONE"
    assert _texts(actors, document_id) == _expected(2)


def _corrupt(rng: random.Random, events: tuple[dict, ...]) -> tuple[int, tuple[dict, ...]]:
    """One event (not the first page's header) spoiled in one of the ways a broken service could."""
    at = rng.randrange(1, len(events))
    event = dict(events[at])
    spoil = rng.choice(
        ["no page", "page as text", "other page", "unknown type", "no type", "index as text", "page skipped"]
        + (["line repeated"] if events[at - 1]["type"] == "line" else [])
    )
    if spoil == "no page":
        event.pop("page", None)
    elif spoil == "page as text":
        event["page"] = str(event.get("page"))
    elif spoil == "other page":
        event["type"], event["page"] = "line", 99
    elif spoil == "unknown type":
        event["type"] = "surprise"
    elif spoil == "no type":
        event.pop("type")
    elif spoil == "index as text":
        event["type"], event["index"] = "line", "0"
    elif spoil == "page skipped":
        event["type"], event["page"] = "page", events[at - 1]["page"] + 2
    else:
        event = dict(events[at - 1])
    return at, (*events[:at], event, *events[at + 1 :])


@pytest.mark.parametrize("seed", range(16))
def test_a_malformed_stream_never_leaves_a_job_running_nor_stores_a_page_twice(
    actors: Actors, standin: StandIn, seed: int
) -> None:
    rng = random.Random(seed)
    pages = rng.randint(1, 4)
    at, events = _corrupt(rng, page_events(pages))
    standin.service.plan(STREAM, *[Drip(events)] * 3)
    document_id = upload(actors, 300 + seed, pages=pages)
    job_id = _start(actors, document_id)
    drain(runner(actors.client, standin.url))
    job = job_of(actors, job_id)
    # Pages complete before the spoiled event are stored once; the job fails after its three attempts.
    stored = sum(1 for e in events[:at] if e.get("type") == "page") - 1
    assert (job["status"], job["errorCode"], job["attempts"]) == ("FAILED", "OCR_SERVICE_UNAVAILABLE", 3)
    assert job["pagesDone"] == stored
    assert _texts(actors, document_id) == _expected(stored)


def test_a_job_that_takes_its_runners_down_is_failed_after_the_most_attempts(
    actors: Actors, standin: StandIn, clock: FakeClock
) -> None:
    document_id = upload(actors, 40, pages=1)
    job_id = _start(actors, document_id)
    dead = runner(actors.client, standin.url, owner="dead", clock=clock)
    for _ in range(3):  # APP_OCR_MAX_ATTEMPTS runners claim it and die
        assert len(dead.queue.claim(1, clock())) == 1
        clock.advance(LEASE.total_seconds() + 1)
    drain(runner(actors.client, standin.url, owner="heir", clock=clock))
    job = job_of(actors, job_id)
    assert (job["status"], job["errorCode"], job["attempts"]) == ("FAILED", "OCR_SERVICE_UNAVAILABLE", 4)
    assert standin.service.count(STREAM) == 0


def test_a_renewed_lease_keeps_the_job_from_other_runners(actors: Actors, clock: FakeClock) -> None:
    document_id = upload(actors, 41, pages=1)
    job_id = _start(actors, document_id)
    services = services_of(actors.client)
    live, other = (JobQueue(services.db, services.lines, owner, LEASE) for owner in ("live", "other"))
    assert [job.job_id for job in live.claim(1, clock())] == [job_id]
    for _ in range(5):
        clock.advance(LEASE.total_seconds() * 2 / 3)
        live.renew(job_id, clock())
        assert other.claim(1, clock()) == []
    clock.advance(LEASE.total_seconds() + 1)
    assert [job.job_id for job in other.claim(1, clock())] == [job_id]
    with pytest.raises(LeaseLost):
        live.renew(job_id, clock())


@pytest.mark.skipif(DATABASE_KIND != "postgresql", reason="row locks (SKIP LOCKED) exist on PostgreSQL only")
def test_a_runner_passes_over_a_job_another_transaction_has_locked(actors: Actors) -> None:
    ids = [upload(actors, 42 + n, pages=1) for n in range(3)]
    actors.client.post("/api/ocr/batches", headers=actors.archivist, json={"documentIds": ids})
    services = services_of(actors.client)
    queue = JobQueue(services.db, services.lines, "runner", LEASE)
    with services.db.sessions() as holder:
        locked = holder.scalars(skip_locked(select(OcrJob.id).order_by(OcrJob.id).limit(1))).one()
        taken = [job.job_id for job in queue.claim(10, services.clock())]
        holder.rollback()
    assert locked not in taken and len(taken) == 2


def test_the_progress_stream_ends_with_a_code_when_its_job_is_gone(app_factory: AppFactory) -> None:
    client = app_factory(ocr_poll_s=0.01)
    add_user(client, "erika", Role.ARCHIVIST)
    actors = Actors(client, {}, bearer(client, "erika"))
    job_id = _start(actors, upload(actors, 43, pages=1))
    services = services_of(client)
    first = read_job(services, job_id)
    with services.db.sessions() as session:
        session.execute(delete(OcrJob).where(OcrJob.id == job_id))
        session.commit()

    async def read() -> list[bytes]:
        return [chunk async for chunk in progress_events(services, first)]

    [end] = asyncio.run(read())
    assert end.decode().startswith('event: end\ndata: {"code": "OCR_JOB_NOT_FOUND"')
