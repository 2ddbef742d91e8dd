"""End to end with the real OCR service (tiny model, real kraken) and the real backend app: a
backend stopped in the middle of a document leaves the job QUEUED after page 2; the next
backend resumes it, and the OCR service decodes the missing pages only.

Which pages the service reads is seen inside it: every page a document decodes is recorded
(per opened document, i.e. per request). The first reading is held at page 4's decoding, so
the backend has stored exactly pages 1 and 2 (a page is stored when the next one begins) when
it is stopped — no timing decides where the document breaks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from backend.db import Database
from backend.ocr.models import JobStatus, OcrJob
from backend.users.models import Role
from ocr_service.documents import Document
from tests.backend.conftest import AppFactory, add_user, bearer
from tests.support.servers import RunningApp
from tests.support.synthetic import page_texts, render_page, to_pdf

PAGES = 5  # the shared OCR service's page limit
HELD_AT = 3  # page 4, from 0
GUARD_S = 600  # only a guard against a hung test; never reached when the code works


class DecodeSpy:
    """Records, per opened document, which pages it decoded; holds the first one at HELD_AT."""

    def __init__(self) -> None:
        self.documents: list[tuple[Document, list[int]]] = []
        self.held = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def wrap(self, decode: Callable[[Document, int], Image.Image]) -> Callable[[Document, int], Image.Image]:
        def page(document: Document, index: int) -> Image.Image:
            with self._lock:
                pages = next((p for d, p in self.documents if d is document), None)
                if pages is None:
                    pages = []
                    self.documents.append((document, pages))
                pages.append(index)
                first = self.documents[0][0] is document
            if first and index == HELD_AT:
                self.held.set()
                assert self.release.wait(GUARD_S), "the test never let the first reading go on"
            return decode(document, index)

        return page

    def decoded(self) -> list[list[int]]:
        with self._lock:
            return [list(pages) for _, pages in self.documents]


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + GUARD_S
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def _pdf() -> bytes:
    pages = [render_page(page_texts(40 + n, 2, 4), width=800, height=500, font_size=36) for n in range(PAGES)]
    return to_pdf([page.image for page in pages], dpi=150)


@pytest.mark.slow
def test_a_backend_stopped_after_page_2_resumes_and_the_service_reads_only_pages_3_to_5(
    app_factory: AppFactory, db: Database, shared_service: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = DecodeSpy()
    monkeypatch.setattr(Document, "page", spy.wrap(Document.page))
    backend: dict[str, Any] = {"ocr_urls": shared_service.url, "ocr_jobs_concurrency": 1, "ocr_poll_s": 0.05}
    first = app_factory(**backend)
    add_user(first, "erika", Role.ARCHIVIST)
    auth = bearer(first, "erika")
    uploaded = first.post(
        "/api/documents",
        headers=auth,
        files={"file": ("brief.pdf", _pdf(), "application/pdf")},
        data={"title": "Brief"},
    )
    assert uploaded.status_code == 201, uploaded.text
    document_id = uploaded.json()["id"]
    started = first.post(f"/api/documents/{document_id}/ocr", headers=auth)
    assert started.status_code == 202, started.text
    job_id = started.json()["jobId"]
    bearer_of = {first: auth}

    def job(client: Any) -> dict[str, Any]:
        response = client.get(f"/api/ocr/jobs/{job_id}", headers=bearer_of[client])
        assert response.status_code == 200, response.text
        return dict(response.json())

    try:
        assert spy.held.wait(GUARD_S), "the first reading never reached page 4"
        _wait_for(lambda: job(first)["pagesDone"] == 2, "pages 1 and 2 stored")
        # The backend stops mid-document: its runner hands the job back and drops the stream.
        first.__exit__(None, None, None)
    finally:
        spy.release.set()

    # Handed back to the queue with its two pages (read before the next backend takes it up).
    with db.sessions() as session:
        stopped = session.get_one(OcrJob, job_id)
        assert (stopped.status, stopped.pages_done, stopped.lease_owner) == (JobStatus.QUEUED, 2, None)

    second = app_factory(**backend)
    auth = bearer_of[second] = bearer(second, "erika")
    with second.stream("GET", f"/api/ocr/jobs/{job_id}/events", headers=auth) as events:
        assert events.status_code == 200
        events.read()  # ends when the job has ended
    done = job(second)
    assert (done["status"], done["pagesDone"], done["pagesTotal"], done["attempts"]) == ("DONE", PAGES, PAGES, 2)

    readings = spy.decoded()
    assert len(readings) == 2, readings
    # The first reading got as far as page 4; the resumed one began at page 3 and read to the end.
    # (Sorted: two pages are in flight at once, each decoded once.)
    assert sorted(readings[0])[: HELD_AT + 1] == list(range(HELD_AT + 1))
    assert sorted(readings[1]) == list(range(2, PAGES))

    lines = second.get(f"/api/documents/{document_id}/lines", headers=auth).json()
    positions = [(line["page"], line["orderIndex"]) for line in lines]
    assert len(positions) == len(set(positions)), "a line was stored twice"
    # Every page has its lines, pages 1 and 2 from the first reading, 3 to 5 from the second.
    assert {page for page, _ in positions} == set(range(1, PAGES + 1))
