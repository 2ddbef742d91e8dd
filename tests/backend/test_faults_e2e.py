"""Fault tests, end to end with real processes: ``python -m backend`` and the OCR service.

Each test starts the backend and the OCR service as processes of their own on loopback (free
ports, data in the test's tmp folder), kills one of them with SIGKILL in the middle of the
work, starts it again, and checks that nothing was lost, nothing stored twice and nothing
left RUNNING:

1. the backend is killed mid-document; the next backend takes the job up after its lease
   and the OCR service is asked for the missing pages only;
2. the OCR service is killed mid-batch; the documents not done end FAILED with
   OCR_SERVICE_UNAVAILABLE, and the batch's retry finishes them from their first missing page;
3. two backends on one PostgreSQL database share a batch; every job is taken by one of them.

1 and 2 run on the suite's database (SQLite, or PostgreSQL with APP_TEST_DATABASE=postgresql;
``db`` empties it afterwards, once the processes are gone); 3 makes a PostgreSQL database of
its own and is skipped, with the reason, where PostgreSQL is not reachable.

Where a document breaks is not left to timing: the OCR service runs as
``python -m tests.support.traced_ocr_service`` (the service's own ``main`` with a trace of
the pages it reads, and a hold before one page of a chosen document until the test lets it
go). Every wait is a poll on a condition with a generous deadline, never a fixed sleep.
Pages are tall and narrow (1:8) with three one-word lines: kraken segments a page at 1800 px
high, so a narrow page is the cheapest one (3.8 s a page here against 6.0 s at 1:5), and the
tiny model reads these words exactly, so each stored page can be checked against the words
drawn on it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from backend.db import Database
from backend.ocr.models import JobStatus, OcrJob
from tests.backend.conftest import postgres_database as shared_postgres_database
from tests.support.models import tiny_recognition_model
from tests.support.processes import DPI, Backend, OcrService, Processes, backend_env, wait_for
from tests.support.synthetic import page_texts, render_page, to_pdf

pytestmark = pytest.mark.slow


# --- the OCR service -------------------------------------------------------------------------


@dataclass
class TracedOcrService(OcrService):
    """The service as ``tests.support.traced_ocr_service``: a trace per process, holds before pages."""

    traces: list[Path] = field(default_factory=list)

    @property
    def release(self) -> Path:
        return self.folder / "release"

    def start(self, hold: dict[str, int] | None = None) -> TracedOcrService:
        """A fresh service process on the same port and model store, with a trace of its own."""
        self.traces.append(self.folder / f"trace-{len(self.traces)}.jsonl")
        self.start_process(
            "tests.support.traced_ocr_service",
            FAULT_TRACE=str(self.traces[-1]),
            FAULT_HOLD=json.dumps(hold or {}),
            FAULT_RELEASE=str(self.release),
        )
        return self

    def entries(self, trace: Path | None = None) -> list[dict[str, Any]]:
        """The trace of the process running now (or of an earlier one)."""
        trace = trace or self.traces[-1]
        if not trace.exists():
            return []
        return [json.loads(line) for line in trace.read_text().splitlines()]

    def runs(self) -> list[dict[str, Any]]:
        """Each reading of a document: its sha256, page count, page range, and the pages it decoded."""
        entries = self.entries()
        runs = [dict(entry, decoded=[]) for entry in entries if "sha256" in entry]
        for entry in entries:
            if "index" in entry and "run" in entry:
                runs[entry["run"]]["decoded"].append(entry["index"])
        return runs

    def pages_read(self, sha256: str) -> list[tuple[int, list[str]]]:
        """Every page of the document that any reading of it read (by any process the service
        ran as), with the words read there."""
        read = []
        for trace in self.traces:
            entries = self.entries(trace)
            runs = {entry["run"] for entry in entries if entry.get("sha256") == sha256}
            read += [(e["page"], e["texts"]) for e in entries if "texts" in e and e["run"] in runs]
        return read

    def held(self) -> set[str]:
        """The documents (sha256) whose reading waits at its hold now."""
        entries = self.entries()
        sha = {entry["run"]: entry["sha256"] for entry in entries if "sha256" in entry}
        return {sha[entry["held"]] for entry in entries if "held" in entry}


def traced_service(processes: Processes, tmp_path: Path) -> TracedOcrService:
    """The service with the tests' tiny bbox model as its default (the pages' words are its alphabet)."""
    return TracedOcrService(processes, tmp_path / "ocr", tiny_recognition_model("safetensors"))


# --- the backend -----------------------------------------------------------------------------


@dataclass
class Letter:
    """A document of tall narrow pages (1:8, below the OCR service's 1:10), each with three
    one-word lines drawn on it."""

    seed: int
    pages: int
    texts: list[list[str]] = field(init=False)
    pdf: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.texts = [page_texts(self.seed * 100 + n, 3, 1) for n in range(self.pages)]
        images = [render_page(t, width=150, height=1200, font_size=24, margin=16).image for t in self.texts]
        self.pdf = to_pdf(images, dpi=DPI)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.pdf).hexdigest()


def upload(client: httpx.Client, letter: Letter) -> int:
    response = client.post(
        "/api/documents",
        files={"file": (f"letter-{letter.seed}.pdf", letter.pdf, "application/pdf")},
        data={"title": f"Letter {letter.seed}"},
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def job(client: httpx.Client, job_id: int) -> dict[str, Any]:
    response = client.get(f"/api/ocr/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def batch_jobs(client: httpx.Client, batch_id: int) -> dict[int, dict[str, Any]]:
    """The batch's jobs by document id."""
    response = client.get(f"/api/ocr/batches/{batch_id}")
    assert response.status_code == 200, response.text
    return {j["documentId"]: j for j in response.json()["jobs"]}


def batch_ended(client: httpx.Client, batch_id: int) -> dict[int, dict[str, Any]] | None:
    """The batch's jobs once every one of them has ended (DONE or FAILED); None before."""
    jobs = batch_jobs(client, batch_id)
    return jobs if all(j["status"] in ("DONE", "FAILED") for j in jobs.values()) else None


def lines(client: httpx.Client, document_id: int) -> list[dict[str, Any]]:
    response = client.get(f"/api/documents/{document_id}/lines")
    assert response.status_code == 200, response.text
    return list(response.json())


def assert_read_exactly(stored: list[dict[str, Any]], letter: Letter, service: TracedOcrService) -> None:
    """Every page's lines stored once, in order, on their page: what the OCR service read there.

    The service's own words per page (from its traces: every reading of the letter) are the
    reference, not the words drawn: the tiny model misreads a letter here and there, always the
    same way, so every reading of a page must agree with every other and with what is stored.
    """
    positions = [(line["page"], line["orderIndex"]) for line in stored]
    assert len(positions) == len(set(positions)), f"a line was stored twice: {positions}"
    by_page: dict[int, list[tuple[int, str]]] = {}
    for line in stored:
        by_page.setdefault(line["page"], []).append((line["orderIndex"], line["ocrText"]))
    reference: dict[int, list[str]] = {}
    for page, texts in service.pages_read(letter.sha256):
        assert reference.setdefault(page, texts) == texts, f"two readings of page {page} differ"
    assert set(reference) == set(range(1, letter.pages + 1)), "a page was never read"
    assert {page: [t for _, t in sorted(found)] for page, found in by_page.items()} == reference


def assert_nothing_left_running(database_url: str) -> None:
    database = Database(database_url)
    try:
        with database.sessions() as session:
            active = session.scalars(select(OcrJob).where(OcrJob.status.in_((JobStatus.QUEUED, JobStatus.RUNNING))))
            assert list(active) == []
            held = session.scalars(select(OcrJob).where(OcrJob.lease_owner.is_not(None)))
            assert list(held) == []
    finally:
        database.dispose()


def job_rows(database_url: str) -> dict[int, OcrJob]:
    """The job rows as the database holds them (by document id), read past any backend."""
    database = Database(database_url)
    try:
        with database.sessions() as session:
            return {row.document_id: row for row in session.scalars(select(OcrJob))}
    finally:
        database.dispose()


# --- 1. the backend killed mid-document ---------------------------------------------------------


def test_a_backend_killed_mid_document_is_resumed_by_the_next_at_the_first_missing_page(
    db: Database, database_url: str, tmp_path: Path, processes: Processes
) -> None:
    letter = Letter(seed=1, pages=3)
    # Held before page 3: page 1 is stored, page 2 has been read but not stored when the backend dies.
    ocr = traced_service(processes, tmp_path).start(hold={letter.sha256: 2})
    # A short lease: the next backend takes the dead one's job up soon after it died.
    env = backend_env(tmp_path, database_url, ocr.url, APP_OCR_LEASE_S="3")
    first = Backend(processes, env).start()
    with first.client() as client:
        document_id = upload(client, letter)
        started = client.post(f"/api/documents/{document_id}/ocr")
        assert started.status_code == 202, started.text
        job_id = started.json()["jobId"]
        wait_for(
            lambda: letter.sha256 in ocr.held() and job(client, job_id)["pagesDone"] == 1,
            "page 1 stored while the reading waits before page 3",
            (first.process, ocr.process),
        )
        page_1 = lines(client, document_id)
    first.process.kill()

    # Killed, not stopped: nobody handed the job back; it is RUNNING under a lease that will expire.
    row = job_rows(database_url)[document_id]
    assert (row.status, row.pages_done, row.attempts) == (JobStatus.RUNNING, 1, 1)
    assert row.lease_owner is not None
    ocr.release.touch()  # the dead backend's reading may go on; nobody listens to it

    second = Backend(processes, env).start()
    with second.client() as client:
        done = wait_for(
            lambda: (j := job(client, job_id))["status"] in ("DONE", "FAILED") and j,
            "the job ends",
            (second.process, ocr.process),
        )
        assert (done["status"], done["pagesDone"], done["pagesTotal"], done["attempts"]) == ("DONE", 3, 3, 2)
        stored = lines(client, document_id)
        assert client.get(f"/api/documents/{document_id}").json()["status"] == "DONE"

    assert_read_exactly(stored, letter, ocr)
    # Page 1's lines are the ones stored before the kill, not a second reading of them.
    assert [line for line in stored if line["page"] == 1] == page_1
    runs = ocr.runs()
    assert [(r["sha256"], r["first"], r["stop"]) for r in runs] == [(letter.sha256, 0, 3), (letter.sha256, 1, 3)]
    # The resumed reading asked for pages 2 and 3 only (the first one read page 2 in vain).
    assert sorted(runs[1]["decoded"]) == [1, 2]
    assert_nothing_left_running(database_url)


# --- 2. the OCR service killed mid-batch --------------------------------------------------------


def test_an_ocr_service_killed_mid_batch_fails_the_rest_and_the_retry_finishes_them(
    db: Database, database_url: str, tmp_path: Path, processes: Processes
) -> None:
    done_first, broken, queued = Letter(seed=2, pages=1), Letter(seed=3, pages=3), Letter(seed=4, pages=2)
    letters = (done_first, broken, queued)
    ocr = traced_service(processes, tmp_path).start(hold={broken.sha256: 2})
    # One job at a time: the first document ends DONE, the second breaks, the third is still queued.
    backend = Backend(processes, backend_env(tmp_path, database_url, ocr.url, APP_OCR_LEASE_S="60")).start()
    with backend.client() as client:
        ids = [upload(client, letter) for letter in letters]
        started = client.post("/api/ocr/batches", json={"documentIds": ids})
        assert started.status_code == 202, started.text
        batch_id = started.json()["batchId"]
        watched = (backend.process, ocr.process)
        wait_for(
            lambda: broken.sha256 in ocr.held() and batch_jobs(client, batch_id)[ids[1]]["pagesDone"] == 1,
            "the first document done and the second's page 1 stored",
            watched,
        )
        jobs = batch_jobs(client, batch_id)
        assert [jobs[i]["status"] for i in ids] == ["DONE", "RUNNING", "QUEUED"]
        before = {i: lines(client, i) for i in ids[:2]}

        ocr.process.kill()
        ended = wait_for(
            lambda: batch_ended(client, batch_id),
            "every job of the batch ends while the OCR service is down",
            (backend.process,),
        )
        assert [ended[i]["status"] for i in ids] == ["DONE", "FAILED", "FAILED"]
        assert {ended[i]["errorCode"] for i in ids[1:]} == {"OCR_SERVICE_UNAVAILABLE"}
        assert [ended[i]["pagesDone"] for i in ids] == [1, 1, 0]
        assert {i: lines(client, i) for i in ids[:2]} == before  # nothing stored is lost
        assert_nothing_left_running(database_url)

        ocr.start()  # no hold this time
        # The breaker may still be open from the failed calls; it lets a call through after its wait.
        retried = wait_for(
            lambda: (r := client.post(f"/api/ocr/batches/{batch_id}/retry")).status_code == 202 and r.json(),
            "the batch's retry is accepted",
            (backend.process, ocr.process),
        )
        assert sorted(retried["requeued"]) == sorted(ended[i]["id"] for i in ids[1:])
        final = wait_for(
            lambda: batch_ended(client, batch_id),
            "every job of the batch ends after the retry",
            (backend.process, ocr.process),
        )
        assert [(final[i]["status"], final[i]["pagesDone"]) for i in ids] == [("DONE", 1), ("DONE", 3), ("DONE", 2)]
        stored = {i: lines(client, i) for i in ids}

    for document_id, letter in zip(ids, letters, strict=True):
        assert_read_exactly(stored[document_id], letter, ocr)
    assert stored[ids[0]] == before[ids[0]]  # the document done before the kill was not read again
    assert [line for line in stored[ids[1]] if line["page"] == 1] == before[ids[1]]
    # The restarted service read the broken document from page 2 and the queued one whole; nothing else.
    assert sorted((r["sha256"], r["first"], r["stop"]) for r in ocr.runs()) == sorted(
        [(broken.sha256, 1, 3), (queued.sha256, 0, 2)]
    )
    assert_nothing_left_running(database_url)


# --- 3. two backends on one PostgreSQL database -------------------------------------------------


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A database of the test's own on the build machine's PostgreSQL, dropped at the end."""
    yield from shared_postgres_database("fault", "two backends need one PostgreSQL database")


def test_two_backends_on_one_postgresql_database_share_a_batch_and_take_each_job_once(
    tmp_path: Path, processes: Processes, postgres_database: str
) -> None:
    letters = [Letter(seed=5, pages=2), Letter(seed=6, pages=2), Letter(seed=7, pages=1), Letter(seed=8, pages=1)]
    first_two = [letter.sha256 for letter in letters[:2]]
    # The first two documents wait before their page 2 until both are being read: with one job
    # at a time per backend, that proves the two backends took one each.
    ocr = traced_service(processes, tmp_path).start(hold=dict.fromkeys(first_two, 1))
    shared = {"APP_STORAGE_DIR": str(tmp_path / "storage"), "APP_OCR_LEASE_S": "60"}
    # One after the other: the first applies the migrations and creates the admin.
    one = Backend(processes, backend_env(tmp_path, postgres_database, ocr.url, **shared)).start()
    two = Backend(processes, backend_env(tmp_path, postgres_database, ocr.url, **shared)).start()
    watched = (one.process, two.process, ocr.process)
    with one.client() as client:
        ids = [upload(client, letter) for letter in letters]
        started = client.post("/api/ocr/batches", json={"documentIds": ids})
        assert started.status_code == 202, started.text
        batch_id = started.json()["batchId"]
        wait_for(lambda: ocr.held() == set(first_two), "both backends read a document", watched)
        rows = job_rows(postgres_database)
        owners = {rows[i].lease_owner for i in ids[:2]}
        assert None not in owners and len(owners) == 2, f"one backend holds both jobs: {owners}"
        ocr.release.touch()
        final = wait_for(
            lambda: batch_ended(client, batch_id),
            "every job of the batch ends",
            watched,
        )
        stored = {i: lines(client, i) for i in ids}
    with two.client() as client:
        assert batch_jobs(client, batch_id) == final  # both see the one database

    assert [(final[i]["status"], final[i]["attempts"]) for i in ids] == [("DONE", 1)] * len(ids)
    for document_id, letter in zip(ids, letters, strict=True):
        assert_read_exactly(stored[document_id], letter, ocr)
    # The OCR service read each document once, whole.
    assert sorted((r["sha256"], r["first"], r["stop"]) for r in ocr.runs()) == sorted(
        (letter.sha256, 0, letter.pages) for letter in letters
    )
    assert_nothing_left_running(postgres_database)
