"""Resume at the first missing page: the OCR service is asked for the pages not yet stored, only.

Against the scripted stand-in on loopback, which answers a page range like the real service
(from ``firstPage`` on, the document's own page numbers). Each resumed stream is tagged
("again ...") so that a page read or stored twice shows in the lines; on SQLite and, with
``APP_TEST_DATABASE=postgresql``, on PostgreSQL.
"""

from __future__ import annotations

import random

import pytest
from sqlalchemy import func, select

from backend.documents.models import Line
from backend.ocr.models import JobStatus
from tests.backend.conftest import Actors, FakeClock, services_of
from tests.backend.ocr_jobs import LEASE, drain, job_counts, job_of, page_events, runner, upload
from tests.backend.ocr_standin import Drip, StandIn

STREAM = "POST /ocr/stream"


def _start(actors: Actors, document_id: int) -> int:
    response = actors.client.post(f"/api/documents/{document_id}/ocr", headers=actors.archivist)
    assert response.status_code == 202, response.text
    return int(response.json()["jobId"])


def _texts(actors: Actors, document_id: int) -> list[tuple[int, int, str]]:
    response = actors.client.get(f"/api/documents/{document_id}/lines", headers=actors.archivist)
    return [(line["page"], line["orderIndex"], line["currentText"]) for line in response.json()]


def _expected(pages: range, per_page: int, tag: str = "") -> list[tuple[int, int, str]]:
    return [(p, i, f"{tag}p{p} l{i}") for p in pages for i in range(per_page)]


def _line_rows(actors: Actors) -> int:
    with services_of(actors.client).db.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Line)) or 0)


def _broken_after(pages: int, per_page: int, stored: int) -> Drip:
    """The whole document's stream, broken right after page ``stored + 1`` began: pages 1 to
    ``stored`` are proven complete (a page is stored when the next one begins), no more."""
    events = page_events(pages, per_page)
    headers = [at for at, event in enumerate(events) if event["type"] == "page"]
    return Drip(events, die_after=headers[stored] + 1)


@pytest.mark.parametrize("seed", range(8))
def test_a_broken_stream_resumes_and_the_service_reads_only_the_missing_pages(
    actors: Actors, standin: StandIn, seed: int
) -> None:
    rng = random.Random(seed)
    pages = rng.randint(2, 9)
    stored, per_page = rng.randint(1, pages - 1), rng.randint(1, 3)
    standin.service.plan(STREAM, _broken_after(pages, per_page, stored), Drip(page_events(pages, per_page, "again ")))
    document_id = upload(actors, 500 + seed, pages=pages)
    job_id = _start(actors, document_id)
    drain(runner(actors.client, standin.url))

    first, second = standin.service.seen
    # A fresh job asks for the whole document; the resumed one for the first page it lacks, on.
    assert first.fields == {}
    assert second.fields == {"firstPage": str(stored + 1)}
    assert second.file_sha256 == first.file_sha256
    job = job_of(actors, job_id)
    assert (job["status"], job["pagesDone"], job["attempts"]) == ("DONE", pages, 2)
    # Pages 1..stored come from the first reading only, the rest from the second: none read twice.
    assert _texts(actors, document_id) == _expected(range(1, stored + 1), per_page) + _expected(
        range(stored + 1, pages + 1), per_page, "again "
    )
    assert _line_rows(actors) == pages * per_page


@pytest.mark.parametrize("seed", range(3))
def test_a_job_whose_runner_died_after_page_k_is_read_from_page_k_plus_1(
    actors: Actors, standin: StandIn, clock: FakeClock, seed: int
) -> None:
    rng = random.Random(100 + seed)
    pages = rng.randint(2, 7)
    stored = rng.randint(1, pages - 1)
    document_id = upload(actors, 600 + seed, pages=pages)
    job_id = _start(actors, document_id)
    dead = runner(actors.client, standin.url, owner="dead", clock=clock)
    [claimed] = dead.queue.claim(1, clock())
    events = page_events(pages)
    for page in range(1, stored + 1):
        lines = [e for e in events if e["type"] == "line" and e["page"] == page]
        dead.queue.store_page(claimed, page, lines, model="default", model_version=None, now=clock())
    clock.advance(LEASE.total_seconds() + 1)
    standin.service.plan(STREAM, Drip(page_events(pages, tag="again ")))
    drain(runner(actors.client, standin.url, owner="heir", clock=clock))

    [seen] = standin.service.seen
    assert seen.fields == {"firstPage": str(stored + 1)}
    job = job_of(actors, job_id)
    assert (job["status"], job["pagesDone"], job["attempts"]) == ("DONE", pages, 2)
    assert _texts(actors, document_id) == _expected(range(1, stored + 1), 2) + _expected(
        range(stored + 1, pages + 1), 2, "again "
    )
    assert _line_rows(actors) == pages * 2


def test_a_job_with_every_page_stored_ends_without_a_call(actors: Actors, standin: StandIn, clock: FakeClock) -> None:
    document_id = upload(actors, 700, pages=3)
    job_id = _start(actors, document_id)
    dead = runner(actors.client, standin.url, owner="dead", clock=clock)
    [claimed] = dead.queue.claim(1, clock())
    events = page_events(3)
    for page in (1, 2, 3):
        lines = [e for e in events if e["type"] == "line" and e["page"] == page]
        dead.queue.store_page(claimed, page, lines, model="default", model_version=None, now=clock())
    # Died between its last page and the end: firstPage 4 of 3 would be refused, so no call at all.
    clock.advance(LEASE.total_seconds() + 1)
    drain(runner(actors.client, standin.url, owner="heir", clock=clock))
    assert standin.service.count(STREAM) == 0
    job = job_of(actors, job_id)
    assert (job["status"], job["pagesDone"], job["attempts"]) == ("DONE", 3, 2)
    assert _texts(actors, document_id) == _expected(range(1, 4), 2)


def test_a_resumed_stream_that_starts_at_another_page_stores_nothing_twice(actors: Actors, standin: StandIn) -> None:
    # A service that ignores firstPage (page 1 again), then one that skips a page (page 4 for 3).
    from_the_start = Drip(page_events(5, tag="again "), honours_range=False)
    skipping = Drip(page_events(5, tag="again ", first=4))
    standin.service.plan(STREAM, _broken_after(5, 2, 2), from_the_start, skipping)
    document_id = upload(actors, 701, pages=5)
    job_id = _start(actors, document_id)
    drain(runner(actors.client, standin.url))
    assert [seen.fields for seen in standin.service.seen] == [{}, {"firstPage": "3"}, {"firstPage": "3"}]
    job = job_of(actors, job_id)
    assert (job["status"], job["errorCode"], job["pagesDone"], job["attempts"]) == (
        "FAILED",
        "OCR_SERVICE_UNAVAILABLE",
        2,
        3,
    )
    assert _texts(actors, document_id) == _expected(range(1, 3), 2)
    assert _line_rows(actors) == 4


def test_a_done_before_the_last_page_is_not_taken_for_the_end(actors: Actors, standin: StandIn) -> None:
    events = page_events(4)
    # Pages 1 and 2, then "done": pages 3 and 4 would never be read.
    early = tuple(e for e in events if e.get("page") in (None, 1, 2))
    standin.service.plan(STREAM, Drip(early), Drip(page_events(4, tag="again ")))
    document_id = upload(actors, 702, pages=4)
    job_id = _start(actors, document_id)
    drain(runner(actors.client, standin.url))
    # Page 2 is not proven complete by an event the backend cannot trust: it is read again.
    assert [seen.fields for seen in standin.service.seen] == [{}, {"firstPage": "2"}]
    job = job_of(actors, job_id)
    assert (job["status"], job["pagesDone"], job["attempts"]) == ("DONE", 4, 2)
    assert _texts(actors, document_id) == _expected(range(1, 2), 2) + _expected(range(2, 5), 2, "again ")
    assert job_counts(actors.client) == {JobStatus.DONE: 1}
