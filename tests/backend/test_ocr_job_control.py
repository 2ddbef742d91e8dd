"""Cancelling OCR jobs and batches: at once when queued, promptly when running (in any process), pages kept."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from backend.db import Database
from backend.documents.models import Document, Line
from backend.errors import AppError, ErrorCode
from backend.ocr.models import JobStatus, OcrJob
from backend.ocr.queue import JobQueue, LeaseLost
from backend.users.models import Role, User
from tests.backend.conftest import Actors, AppFactory, FakeClock, add_user, bearer, services_of
from tests.backend.ocr_jobs import LEASE, drain, job_counts, job_of, page_events, runner, upload
from tests.backend.ocr_standin import Drip, StandIn

STREAM = "POST /ocr/stream"


def _start(actors: Actors, document_id: int, headers: dict[str, str] | None = None, **body: Any) -> int:
    response = actors.client.post(
        f"/api/documents/{document_id}/ocr", headers=headers or actors.archivist, json=body or None
    )
    assert response.status_code == 202, response.text
    return int(response.json()["jobId"])


def _document_status(actors: Actors, document_id: int) -> str:
    return str(actors.client.get(f"/api/documents/{document_id}", headers=actors.archivist).json()["status"])


def _pages_with_lines(actors: Actors, document_id: int) -> list[int]:
    lines = actors.client.get(f"/api/documents/{document_id}/lines", headers=actors.archivist).json()
    return sorted({line["page"] for line in lines})


def _stalling_after_page(pages: int, complete: int) -> Drip:
    """A stream that sends pages 1..complete and the next page's header, then nothing until released."""
    events = page_events(pages)
    header = next(i for i, e in enumerate(events) if e["type"] == "page" and e["page"] == complete + 1)
    return Drip(events, stall_after=header + 1)


def _pages_done(database: Database, job_id: int) -> int:
    with database.sessions() as session:
        return int(session.scalar(select(OcrJob.pages_done).where(OcrJob.id == job_id)) or 0)


def test_a_queued_job_is_cancelled_at_once_and_never_runs(actors: Actors, standin: StandIn) -> None:
    document_id = upload(actors, 1, pages=2)
    job_id = _start(actors, document_id)
    response = actors.client.post(f"/api/ocr/jobs/{job_id}/cancel", headers=actors.archivist)
    assert response.status_code == 200, response.text
    job = response.json()
    erika = actors.client.get("/api/auth/me", headers=actors.archivist).json()["id"]
    assert (job["status"], job["cancelledBy"], job["etaSeconds"]) == ("CANCELLED", erika, None)
    assert job["finishedAt"] is not None
    drain(runner(actors.client, standin.url))
    assert standin.service.count(STREAM) == 0
    assert job_of(actors, job_id)["status"] == "CANCELLED"
    assert _document_status(actors, document_id) == "NEW"
    # A new run may start at once: the cancelled job no longer holds the document.
    _start(actors, document_id)


def test_cancelling_an_ended_job_is_409_and_changes_nothing(actors: Actors, standin: StandIn) -> None:
    document_id = upload(actors, 2, pages=1)
    standin.service.plan(STREAM, Drip(page_events(1)))
    job_id = _start(actors, document_id)
    drain(runner(actors.client, standin.url))
    for who in (actors.archivist, actors.admin):
        response = actors.client.post(f"/api/ocr/jobs/{job_id}/cancel", headers=who)
        assert (response.status_code, response.json()["code"]) == (409, "OCR_JOB_FINISHED")
        assert response.json()["details"] == {"status": "DONE"}
    job = job_of(actors, job_id)
    assert (job["status"], job["cancelledBy"]) == ("DONE", None)
    assert _document_status(actors, document_id) == "DONE"
    missing = actors.client.post("/api/ocr/jobs/424242/cancel", headers=actors.archivist)
    assert (missing.status_code, missing.json()["code"]) == (404, "OCR_JOB_NOT_FOUND")


@pytest.mark.timeout(120)
def test_a_running_job_cancelled_from_another_process_stops_its_runner_and_keeps_its_pages(
    actors: Actors, standin: StandIn, database_url: str
) -> None:
    document_id = upload(actors, 3, pages=4)
    standin.service.plan(STREAM, _stalling_after_page(4, complete=2))
    job_id = _start(actors, document_id)
    # The runner has a database handle of its own, as a second backend process would: the
    # cancel reaches it through the database only.
    elsewhere = Database(database_url)
    # The client would wait for the stalled stream far longer than the test may run: only the
    # cancel can end this job.
    patient = {"stream_idle_s": 3600.0, "stream_deadline_s": 3600.0}
    job_runner = runner(actors.client, standin.url, db=elsewhere, sleep=asyncio.sleep, **patient)
    # A renewal refused would stop the runner too, but only after a third of the lease: the
    # runner must notice the cancel by itself, at its next look (every poll interval).
    refused_renewals: list[int] = []
    renew = job_runner.queue.renew

    def watched_renew(job: int, now: Any) -> None:
        try:
            renew(job, now)
        except LeaseLost:
            refused_renewals.append(job)
            raise

    job_runner.queue.renew = watched_renew  # type: ignore[method-assign]

    async def go() -> httpx.Response:
        draining = asyncio.create_task(job_runner.drain())
        while await asyncio.to_thread(_pages_done, elsewhere, job_id) < 2:
            await asyncio.sleep(0.01)
        response = await asyncio.to_thread(
            actors.client.post, f"/api/ocr/jobs/{job_id}/cancel", headers=actors.archivist
        )
        # The stream never ends by itself (it stalls until released): drain() returns only
        # because the runner saw the cancel, closed the stream and let the job go.
        await draining
        await job_runner.client.aclose()
        return response

    try:
        response = asyncio.run(go())
    finally:
        elsewhere.dispose()
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "CANCELLED"
    assert refused_renewals == []
    standin.service.release()
    job = job_of(actors, job_id)
    assert (job["status"], job["pagesDone"], job["pagesTotal"], job["errorCode"]) == ("CANCELLED", 2, 4, None)
    assert _pages_with_lines(actors, document_id) == [1, 2]
    assert _document_status(actors, document_id) == "PARTIAL"
    assert job_counts(actors.client) == {JobStatus.CANCELLED: 1}


@pytest.mark.timeout(120)
def test_the_progress_stream_ends_with_the_cancelled_job(app_factory: AppFactory, standin: StandIn) -> None:
    client = app_factory(ocr_jobs_concurrency=1, ocr_urls=standin.url, ocr_poll_s=0.02)
    add_user(client, "erika", Role.ARCHIVIST)
    actors = Actors(client, {}, bearer(client, "erika"))
    document_id = upload(actors, 4, pages=3)
    standin.service.plan(STREAM, _stalling_after_page(3, complete=1))
    job_id = _start(actors, document_id)
    services = services_of(client)

    def cancel_once_a_page_is_read() -> httpx.Response:
        while _pages_done(services.db, job_id) < 1:
            time.sleep(0.01)
        return client.post(f"/api/ocr/jobs/{job_id}/cancel", headers=actors.archivist)

    with ThreadPoolExecutor(1) as pool:
        cancelled = pool.submit(cancel_once_a_page_is_read)
        # Read to its end: the stream ends only when the job has (here: by the cancel).
        body = client.get(f"/api/ocr/jobs/{job_id}/events", headers=actors.archivist).text
        assert cancelled.result().status_code == 200
    blocks = [block.split("\n") for block in body.strip().split("\n\n")]
    assert [lines[0] for lines in blocks] == ["event: page", "event: end"]
    assert '"status": "CANCELLED"' in blocks[-1][1] and '"pagesDone": 1' in blocks[-1][1]
    standin.service.release()
    assert _pages_with_lines(actors, document_id) == [1]


def test_a_cancel_racing_a_runner_wins_and_the_runner_stores_nothing_more(actors: Actors, clock: FakeClock) -> None:
    document_id = upload(actors, 5, pages=3)
    job_id = _start(actors, document_id)
    services = services_of(actors.client)
    queue = JobQueue(services.db, services.lines, "runner", LEASE)
    [claimed] = queue.claim(1, clock())
    events = page_events(3)
    page_lines = [e for e in events if e["type"] == "line" and e["page"] == 1]
    queue.store_page(claimed, 1, page_lines, model="default", model_version=None, now=clock())
    assert actors.client.post(f"/api/ocr/jobs/{job_id}/cancel", headers=actors.admin).status_code == 200
    # The runner's next page, its renewal and its end are all refused: the job is no longer its own.
    assert not queue.holds(job_id)
    with pytest.raises(LeaseLost):
        queue.store_page(claimed, 2, page_lines, model="default", model_version=None, now=clock())
    with pytest.raises(LeaseLost):
        queue.renew(job_id, clock())
    with pytest.raises(LeaseLost):
        queue.finish(job_id, JobStatus.DONE, clock())
    # Nor does a lease that expires bring it back to a runner.
    clock.advance(LEASE.total_seconds() * 2)
    assert JobQueue(services.db, services.lines, "heir", LEASE).claim(5, clock()) == []
    job = job_of(actors, job_id)
    assert (job["status"], job["pagesDone"]) == ("CANCELLED", 1)
    with services.db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Line)) == len(page_lines)


def test_a_runner_stopping_after_a_cancel_does_not_requeue_the_job(actors: Actors, standin: StandIn) -> None:
    document_id = upload(actors, 6, pages=2)
    standin.service.plan(STREAM, _stalling_after_page(2, complete=1))
    job_id = _start(actors, document_id)
    job_runner = runner(actors.client, standin.url)

    async def go() -> None:
        assert await job_runner.tick() == 1
        while await asyncio.to_thread(_pages_done, services_of(actors.client).db, job_id) < 1:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(actors.client.post, f"/api/ocr/jobs/{job_id}/cancel", headers=actors.archivist)
        await job_runner.stop()  # hands its jobs back to the queue... but not a cancelled one
        await job_runner.client.aclose()

    asyncio.run(go())
    standin.service.release()
    assert job_counts(actors.client) == {JobStatus.CANCELLED: 1}


def test_a_batch_is_cancelled_except_what_has_ended_and_retry_leaves_cancelled_jobs_unless_asked(
    actors: Actors, standin: StandIn
) -> None:
    ids = [upload(actors, 10 + n, pages=1) for n in range(3)]
    response = actors.client.post("/api/ocr/batches", headers=actors.archivist, json={"documentIds": ids})
    batch_id = response.json()["batchId"]
    services = services_of(actors.client)
    # The first document is read before the cancel; the other two are still queued.
    queue = JobQueue(services.db, services.lines, "runner", LEASE)
    [first] = queue.claim(1, services.clock())
    queue.store_page(first, 1, [], model="default", model_version=None, now=services.clock())
    queue.finish(first.job_id, JobStatus.DONE, services.clock())

    cancelled = actors.client.post(f"/api/ocr/batches/{batch_id}/cancel", headers=actors.archivist)
    assert cancelled.status_code == 200, cancelled.text
    batch = actors.client.get(f"/api/ocr/batches/{batch_id}", headers=actors.archivist).json()
    job_ids = [job["id"] for job in batch["jobs"]]
    assert cancelled.json() == {"batchId": batch_id, "cancelled": job_ids[1:]}
    assert [job["status"] for job in batch["jobs"]] == ["DONE", "CANCELLED", "CANCELLED"]
    assert batch["etaSeconds"] is None
    again = actors.client.post(f"/api/ocr/batches/{batch_id}/cancel", headers=actors.archivist)
    assert (again.status_code, again.json()["code"]) == (409, "OCR_JOB_FINISHED")

    # Retry re-queues FAILED jobs only: a cancel was a person's decision.
    plain = actors.client.post(f"/api/ocr/batches/{batch_id}/retry", headers=actors.archivist)
    assert plain.json() == {"batchId": batch_id, "requeued": []}
    asked = actors.client.post(
        f"/api/ocr/batches/{batch_id}/retry", headers=actors.archivist, json={"includeCancelled": True}
    )
    assert asked.status_code == 202 and asked.json() == {"batchId": batch_id, "requeued": job_ids[1:]}
    standin.service.plan(STREAM, Drip(page_events(1)), Drip(page_events(1)))
    drain(runner(actors.client, standin.url))
    assert job_counts(actors.client) == {JobStatus.DONE: 3}
    job = job_of(actors, job_ids[1])
    assert (job["cancelledBy"], job["finishedAt"] is not None) == (None, True)


def test_retry_leaves_out_a_document_someone_started_again_meanwhile(actors: Actors) -> None:
    ids = [upload(actors, 20 + n, pages=1) for n in range(2)]
    batch_id = actors.client.post("/api/ocr/batches", headers=actors.archivist, json={"documentIds": ids}).json()[
        "batchId"
    ]
    actors.client.post(f"/api/ocr/batches/{batch_id}/cancel", headers=actors.archivist)
    _start(actors, ids[0])  # the first document runs on its own now
    asked = actors.client.post(
        f"/api/ocr/batches/{batch_id}/retry", headers=actors.archivist, json={"includeCancelled": True}
    )
    batch = actors.client.get(f"/api/ocr/batches/{batch_id}", headers=actors.archivist).json()
    assert asked.json()["requeued"] == [batch["jobs"][1]["id"]]
    with services_of(actors.client).db.sessions() as session:
        active = session.scalars(
            select(OcrJob.document_id).where(OcrJob.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
        ).all()
    assert sorted(active) == sorted(ids)


def test_cancelling_a_batch_that_does_not_exist_is_404(actors: Actors) -> None:
    response = actors.client.post("/api/ocr/batches/424242/cancel", headers=actors.archivist)
    assert (response.status_code, response.json()["code"]) == (404, "OCR_BATCH_NOT_FOUND")


@pytest.mark.timeout(120)
def test_a_database_hiccup_while_watching_does_not_stop_a_job_that_reads_well(actors: Actors, standin: StandIn) -> None:
    document_id = upload(actors, 30, pages=2)
    standin.service.plan(STREAM, _stalling_after_page(2, complete=1))
    job_id = _start(actors, document_id)
    job_runner = runner(actors.client, standin.url, sleep=asyncio.sleep)
    holds = job_runner.queue.holds
    hiccups: list[int] = []

    def flaky_holds(job: int) -> bool:
        if len(hiccups) < 3:
            hiccups.append(job)
            if len(hiccups) == 3:
                standin.service.release()  # the stream goes on only after the third failed look
            raise OperationalError("SELECT status", {}, ConnectionError("database restarting"))
        return holds(job)

    job_runner.queue.holds = flaky_holds  # type: ignore[method-assign]
    drain(job_runner)
    assert hiccups == [job_id] * 3
    job = job_of(actors, job_id)
    assert (job["status"], job["pagesDone"]) == ("DONE", 2)
    assert _pages_with_lines(actors, document_id) == [1, 2]


def test_moving_a_document_to_the_trash_cancels_its_queued_job(actors: Actors, standin: StandIn) -> None:
    document_id = upload(actors, 40, pages=2)
    job_id = _start(actors, document_id)
    assert actors.client.delete(f"/api/documents/{document_id}", headers=actors.archivist).status_code == 204
    job = job_of(actors, job_id)
    erika = actors.client.get("/api/auth/me", headers=actors.archivist).json()["id"]
    assert (job["status"], job["cancelledBy"], job["finishedAt"] is not None) == ("CANCELLED", erika, True)
    drain(runner(actors.client, standin.url))
    assert standin.service.count(STREAM) == 0
    # Restored, it holds no active job: OCR may start again.
    assert actors.client.post(f"/api/trash/{document_id}/restore", headers=actors.admin).status_code == 200
    assert _document_status(actors, document_id) == "NEW"
    _start(actors, document_id)


def test_moving_a_document_to_the_trash_stops_its_running_job_and_keeps_the_pages_read(
    actors: Actors, clock: FakeClock
) -> None:
    document_id = upload(actors, 41, pages=3)
    job_id = _start(actors, document_id)
    services = services_of(actors.client)
    queue = JobQueue(services.db, services.lines, "runner", LEASE)
    [claimed] = queue.claim(1, clock())
    page_lines = [e for e in page_events(3) if e["type"] == "line" and e["page"] == 1]
    queue.store_page(claimed, 1, page_lines, model="default", model_version=None, now=clock())
    assert actors.client.delete(f"/api/documents/{document_id}", headers=actors.admin).status_code == 204
    # The runner (in any process) sees the job is no longer its own and stores nothing more.
    assert not queue.holds(job_id)
    with pytest.raises(LeaseLost):
        queue.store_page(claimed, 2, page_lines, model="default", model_version=None, now=clock())
    clock.advance(LEASE.total_seconds() * 2)
    assert JobQueue(services.db, services.lines, "heir", LEASE).claim(5, clock()) == []
    job = job_of(actors, job_id)
    admin = actors.client.get("/api/auth/me", headers=actors.admin).json()["id"]
    assert (job["status"], job["pagesDone"], job["cancelledBy"]) == ("CANCELLED", 1, admin)
    assert actors.client.post(f"/api/trash/{document_id}/restore", headers=actors.admin).status_code == 200
    assert _document_status(actors, document_id) == "PARTIAL"
    assert _pages_with_lines(actors, document_id) == [1]


def test_a_job_queued_for_a_document_trashed_meanwhile_is_cancelled_not_run(
    actors: Actors, standin: StandIn, clock: FakeClock
) -> None:
    # A start racing the trash (on SQLite the start reads the document before the trash commits):
    # the job row exists, its document is in the trash. The runner must not read it.
    document_id = upload(actors, 42, pages=1)
    job_id = _start(actors, document_id)
    services = services_of(actors.client)
    with services.db.sessions() as session:
        document = session.get_one(Document, document_id)
        document.deleted_at, document.deleted_by = clock(), document.created_by
        session.commit()
    drain(runner(actors.client, standin.url))
    assert standin.service.count(STREAM) == 0
    assert job_of(actors, job_id)["status"] == "CANCELLED"


def test_retry_leaves_out_a_document_in_the_trash(actors: Actors) -> None:
    ids = [upload(actors, 43 + n, pages=1) for n in range(2)]
    batch_id = actors.client.post("/api/ocr/batches", headers=actors.archivist, json={"documentIds": ids}).json()[
        "batchId"
    ]
    assert actors.client.delete(f"/api/documents/{ids[0]}", headers=actors.archivist).status_code == 204
    asked = actors.client.post(f"/api/ocr/batches/{batch_id}/cancel", headers=actors.archivist)
    assert asked.status_code == 200
    retried = actors.client.post(
        f"/api/ocr/batches/{batch_id}/retry", headers=actors.archivist, json={"includeCancelled": True}
    )
    batch = actors.client.get(f"/api/ocr/batches/{batch_id}", headers=actors.archivist).json()
    assert retried.json()["requeued"] == [batch["jobs"][1]["id"]]
    assert [job["status"] for job in batch["jobs"]] == ["CANCELLED", "QUEUED"]


@pytest.mark.timeout(120)
def test_a_job_retried_before_its_runner_saw_the_cancel_has_one_reader(actors: Actors, standin: StandIn) -> None:
    # Cancel and retry at once: the same runner claims the job again (same owner, RUNNING) while
    # its first run, which has not looked yet, still reads. Both would pass every lease guard.
    document_id = upload(actors, 50, pages=3)
    batch_id = actors.client.post(
        "/api/ocr/batches", headers=actors.archivist, json={"documentIds": [document_id]}
    ).json()["batchId"]
    standin.service.plan(STREAM, _stalling_after_page(3, complete=1), Drip(page_events(3, tag="again ")))
    job_runner = runner(actors.client, standin.url, concurrency=2)  # its watcher never looks
    database = services_of(actors.client).db

    async def go() -> list[int]:
        assert await job_runner.tick() == 1
        [job_id] = [job.job_id for job in job_runner._running.values()]
        while await asyncio.to_thread(_pages_done, database, job_id) < 1:
            await asyncio.sleep(0.01)
        for url, body in (("cancel", None), ("retry", {"includeCancelled": True})):
            response = await asyncio.to_thread(
                actors.client.post, f"/api/ocr/batches/{batch_id}/{url}", headers=actors.archivist, json=body
            )
            assert response.status_code in (200, 202), response.text
        assert await job_runner.tick() == 1
        readers = [job.job_id for job in job_runner._running.values()]
        standin.service.release()
        await job_runner.drain()
        await job_runner.client.aclose()
        return readers

    readers = asyncio.run(go())
    assert len(readers) == 1
    assert job_counts(actors.client) == {JobStatus.DONE: 1}
    lines = actors.client.get(f"/api/documents/{document_id}/lines", headers=actors.archivist).json()
    assert [line["ocrText"] for line in lines if line["page"] > 1] == [
        f"again p{p} l{i}" for p in (2, 3) for i in (0, 1)
    ]


def test_of_two_cancels_racing_on_one_job_exactly_one_cancels_it(actors: Actors) -> None:
    """Another request's cancel arrives after this one read the job and before it writes. SQLite
    (one writer at a time): the other commits first, so this one finds the job ended (409).
    PostgreSQL (the job's row locked FOR UPDATE): the other waits for this one and finds it ended."""
    services = services_of(actors.client)
    on_sqlite = services.db.engine.dialect.name == "sqlite"
    document_id = upload(actors, 51, pages=1)
    job_id = _start(actors, document_id)
    with services.db.sessions() as session:
        admin = session.scalars(select(User).where(User.username == "admin")).one()
    pending = [True]
    others: list[Any] = []

    def other_cancel() -> JobStatus:
        with services.db.sessions() as other:
            return services.jobs.cancel(other, job_id, admin, services.clock()).status

    def cancel_in_between(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if pending and statement.startswith("UPDATE ocr_jobs") and "cancelled_by" in statement:
            pending.clear()
            if on_sqlite:
                assert other_cancel() is JobStatus.CANCELLED
            else:  # it blocks on the row lock until this request commits
                others.append(pool.submit(other_cancel))

    with ThreadPoolExecutor(1) as pool:
        event.listen(services.db.engine, "before_cursor_execute", cancel_in_between)
        try:
            response = actors.client.post(f"/api/ocr/jobs/{job_id}/cancel", headers=actors.archivist)
        finally:
            event.remove(services.db.engine, "before_cursor_execute", cancel_in_between)
        assert not pending
        if on_sqlite:
            assert (response.status_code, response.json()["code"]) == (409, "OCR_JOB_FINISHED"), response.text
            assert job_of(actors, job_id)["cancelledBy"] == admin.id
        else:
            assert response.status_code == 200, response.text
            with pytest.raises(AppError) as refused:
                others[0].result(timeout=60)
            assert refused.value.code is ErrorCode.OCR_JOB_FINISHED
            assert job_of(actors, job_id)["cancelledBy"] != admin.id


@pytest.mark.timeout(120)
def test_a_poll_interval_longer_than_the_lease_still_renews_the_lease_in_time(actors: Actors, standin: StandIn) -> None:
    # APP_OCR_POLL_S paces the cancel watch; the lease must still be renewed every third of it,
    # or a second runner takes a job that is reading well.
    document_id = upload(actors, 52, pages=1)
    standin.service.plan(STREAM, _stalling_after_page(1, complete=0))
    _start(actors, document_id)
    asked: list[float] = []
    watched = asyncio.Event()

    async def recorded_sleep(seconds: float) -> None:
        asked.append(seconds)
        watched.set()
        await asyncio.Event().wait()

    job_runner = runner(actors.client, standin.url, sleep=recorded_sleep)
    job_runner.poll_s = LEASE.total_seconds() * 2

    async def go() -> None:
        assert await job_runner.tick() == 1
        await watched.wait()
        await job_runner.stop()
        await job_runner.client.aclose()

    asyncio.run(go())
    standin.service.release()
    assert asked and asked[0] <= LEASE.total_seconds() / 3
