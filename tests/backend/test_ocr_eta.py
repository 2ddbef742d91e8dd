"""The time estimate of OCR jobs and batches (an injected clock, never a timed assertion) and the job metrics."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.pool import QueuePool

from backend.app import create_management_app
from backend.db import Database
from backend.metrics import Metrics
from backend.ocr.eta import Run, batch_eta, job_eta, seconds_per_page
from backend.ocr.models import ACTIVE, JobStatus
from backend.ocr.queue import JobQueue
from tests.backend.conftest import Actors, FakeClock, services_of
from tests.backend.ocr_jobs import LEASE, drain, page_events, runner, upload
from tests.backend.ocr_standin import Drip, StandIn

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SEEDED = settings(max_examples=300, deadline=None, derandomize=True)


@st.composite
def runs(draw: st.DrawFn) -> Run:
    status = draw(st.sampled_from(JobStatus))
    total = draw(st.integers(1, 500))
    done = draw(st.integers(0, total))
    at_claim = draw(st.integers(0, done))
    started = None if status is JobStatus.QUEUED and draw(st.booleans()) else T0
    finished = T0 + timedelta(seconds=draw(st.integers(0, 10**5))) if status not in ACTIVE else None
    return Run(status, done, total, at_claim, started, finished)


@SEEDED
@given(run=runs(), elapsed=st.integers(0, 10**6), recent=st.none() | st.floats(0.01, 3600))
def test_a_job_goes_at_its_own_pace_else_at_the_recent_one(run: Run, elapsed: int, recent: float | None) -> None:
    now = T0 + timedelta(seconds=elapsed)
    eta = job_eta(run, now, recent)
    left = run.pages_total - run.pages_done
    stored = run.pages_done - run.pages_at_claim
    if run.status not in ACTIVE:
        assert eta is None
    elif run.status is JobStatus.RUNNING and stored > 0 and elapsed > 0:
        assert eta == math.ceil(elapsed / stored * left)
    elif recent is None:
        assert eta is None
    else:
        assert eta == math.ceil(recent * left)
    assert eta is None or eta >= 0


@SEEDED
@given(batch=st.lists(runs(), max_size=8), elapsed=st.integers(0, 10**6), recent=st.none() | st.floats(0.01, 3600))
def test_a_batch_shares_its_jobs_time_among_those_running_at_once(
    batch: list[Run], elapsed: int, recent: float | None
) -> None:
    now = T0 + timedelta(seconds=elapsed)
    etas = [job_eta(run, now, recent) for run in batch if run.status in ACTIVE]
    eta = batch_eta(batch, now, recent)
    if not etas or None in etas:
        assert eta is None
    else:
        running = sum(1 for run in batch if run.status is JobStatus.RUNNING)
        assert eta == math.ceil(sum(e for e in etas if e is not None) / max(1, running))


@SEEDED
@given(batch=st.lists(runs(), max_size=8), elapsed=st.integers(0, 10**6))
def test_the_recent_pace_is_the_seconds_over_the_pages_of_the_runs_that_read_some(
    batch: list[Run], elapsed: int
) -> None:
    now = T0 + timedelta(seconds=elapsed)
    paces = []
    for run in batch:
        end = run.finished_at if run.status is JobStatus.DONE else now
        pages = run.pages_done - run.pages_at_claim
        if run.status in (JobStatus.RUNNING, JobStatus.DONE) and run.started_at and end and pages > 0:
            seconds = (end - run.started_at).total_seconds()
            if seconds > 0:
                paces.append((pages, seconds))
    expected = sum(s for _, s in paces) / sum(p for p, _ in paces) if paces else None
    assert seconds_per_page(batch, now) == expected


def _eta(actors: Actors, kind: str, ident: int) -> int | None:
    response = actors.client.get(f"/api/ocr/{kind}/{ident}", headers=actors.archivist)
    assert response.status_code == 200, response.text
    value = response.json()["etaSeconds"]
    return None if value is None else int(value)


def test_the_estimate_follows_the_pace_observed(actors: Actors, clock: FakeClock) -> None:
    ids = [upload(actors, 1 + n, pages=4) for n in range(2)]
    batch_id = actors.client.post("/api/ocr/batches", headers=actors.archivist, json={"documentIds": ids}).json()[
        "batchId"
    ]
    jobs = [
        job["id"] for job in actors.client.get(f"/api/ocr/batches/{batch_id}", headers=actors.archivist).json()["jobs"]
    ]
    services = services_of(actors.client)
    queue = JobQueue(services.db, services.lines, "runner", LEASE)
    [a] = queue.claim(1, clock())
    # Nothing read anywhere yet: no pace to go by.
    assert (_eta(actors, "jobs", jobs[0]), _eta(actors, "jobs", jobs[1]), _eta(actors, "batches", batch_id)) == (
        None,
        None,
        None,
    )
    for page in (1, 2):
        clock.advance(20)
        queue.store_page(a, page, [], model="default", model_version=None, now=clock())
    clock.advance(10)
    # A: 2 pages in 50 s, 2 left → 50 s. B (queued) at the recent pace, A's: 25 s × 4 pages.
    assert _eta(actors, "jobs", jobs[0]) == 50
    assert _eta(actors, "jobs", jobs[1]) == 100
    assert _eta(actors, "batches", batch_id) == 150  # one job at a time so far
    clock.advance(50)
    for page in (3, 4):
        queue.store_page(a, page, [], model="default", model_version=None, now=clock())
    queue.finish(a.job_id, JobStatus.DONE, clock())
    assert _eta(actors, "jobs", jobs[0]) is None  # ended
    assert _eta(actors, "jobs", jobs[1]) == 100  # A read 4 pages in 100 s
    [b] = queue.claim(1, clock())
    clock.advance(30)
    queue.store_page(b, 1, [], model="default", model_version=None, now=clock())
    assert _eta(actors, "jobs", jobs[1]) == 90  # its own pace now: 30 s a page, 3 left
    # Taken up again by another runner (this one died): the new run's pace counts only its own pages.
    clock.advance(LEASE.total_seconds() + 1)
    heir = JobQueue(services.db, services.lines, "heir", LEASE)
    [b2] = heir.claim(1, clock())
    assert b2.pages_done == 1
    # No page yet in this run: the recent pace (A's 25 s a page; the dead run is no longer counted).
    assert _eta(actors, "jobs", jobs[1]) == 75
    clock.advance(12)
    heir.store_page(b2, 2, [], model="default", model_version=None, now=clock())
    assert _eta(actors, "jobs", jobs[1]) == 24


def _samples(management: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = management.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_job_metrics_count_jobs_by_status_pages_read_and_job_durations(
    actors: Actors, standin: StandIn, clock: FakeClock
) -> None:
    services = services_of(actors.client)
    management = TestClient(create_management_app(services))
    ids = [upload(actors, 10 + n, pages=3) for n in range(3)]
    for document_id in ids:
        actors.client.post(f"/api/documents/{document_id}/ocr", headers=actors.archivist)
    before = _samples(management)
    assert {status: before[("ocr_jobs", (("status", status),))] for status in JobStatus} == {
        "QUEUED": 3,
        "RUNNING": 0,
        "DONE": 0,
        "FAILED": 0,
        "CANCELLED": 0,
    }
    assert before[("ocr_pages_read_total", ())] == 0
    # One job cancelled 30 s into its run; one handed back to the queue by a runner that stops;
    # then both left are read (3 pages each).
    standin.service.plan("POST /ocr/stream", Drip(page_events(3)), Drip(page_events(3)))
    job_runner = runner(actors.client, standin.url, clock=clock)
    other = JobQueue(services.db, services.lines, "other", LEASE, metrics=services.metrics)
    [claimed] = other.claim(1, clock())
    clock.advance(30)
    assert actors.client.post(f"/api/ocr/jobs/{claimed.job_id}/cancel", headers=actors.archivist).status_code == 200
    [queued] = job_runner.queue.claim(1, clock())
    clock.advance(45)
    job_runner.queue.finish(queued.job_id, JobStatus.QUEUED, clock())  # handed back: not an end
    drain(job_runner)
    after = _samples(management)
    assert {status: after[("ocr_jobs", (("status", status),))] for status in JobStatus} == {
        "QUEUED": 0,
        "RUNNING": 0,
        "DONE": 2,
        "FAILED": 0,
        "CANCELLED": 1,
    }
    assert after[("ocr_pages_read_total", ())] == 6
    assert after[("ocr_job_duration_seconds_count", (("status", "CANCELLED"),))] == 1
    assert after[("ocr_job_duration_seconds_sum", (("status", "CANCELLED"),))] == 30
    assert after[("ocr_job_duration_seconds_count", (("status", "DONE"),))] == 2
    assert after[("ocr_job_duration_seconds_sum", (("status", "DONE"),))] == 0  # the clock stood still


def test_a_scrape_without_the_database_leaves_out_only_the_jobs_gauge(tmp_path: Path) -> None:
    metrics = Metrics()
    gone = Database(f"sqlite:///{tmp_path / 'no such folder' / 'backend.db'}")
    metrics.watch_jobs(gone)
    metrics.ocr_pages.inc()
    names = {family.name for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())}
    assert "ocr_pages_read" in names and "ocr_jobs" not in names
    gone.dispose()


def test_a_scrape_counts_jobs_while_the_apps_pool_is_exhausted(actors: Actors) -> None:
    services = services_of(actors.client)
    management = TestClient(create_management_app(services))
    actors.client.post(f"/api/documents/{upload(actors, 7, pages=2)}/ocr", headers=actors.archivist)
    pool = services.db.engine.pool
    assert isinstance(pool, QueuePool)
    # Every connection the app's pool may open, held: a request needing one now waits for the pool.
    held = [services.db.engine.connect() for _ in range(pool.size() + pool._max_overflow)]
    try:
        assert pool.overflow() == pool._max_overflow
        samples = _samples(management)
    finally:
        for connection in held:
            connection.close()
    assert samples[("ocr_jobs", (("status", "QUEUED"),))] == 1
