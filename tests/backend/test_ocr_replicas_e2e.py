"""Two OCR service replicas, real processes on loopback, share one batch of the backend's.

tests/backend/test_ocr_client_replicas.py proves the client's spreading, breakers and retries
against scripted stand-ins; this is the deployment's claim end to end (issue 17, "Scaling"):
``APP_OCR_URLS`` names two OCR service processes on one model store (as the guide's second
replica shares the ``ocr-models`` volume), a batch of several documents is started,
and both replicas read documents (each says so in its own log, one line per reading), every
document ends DONE with its lines, and no document is read twice.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backend.db import Database
from tests.support.models import tiny_recognition_model
from tests.support.processes import DPI, Backend, OcrService, Processes, backend_env, wait_for
from tests.support.synthetic import page_texts, render_page, to_pdf

pytestmark = pytest.mark.slow

DOCUMENTS = 4
# The OCR service's log line for each document it starts reading (ocr_service/ocr.py).
READING = re.compile(r"OCR of a \w+ document with \d+ page\(s\)")


def letter(seed: int) -> bytes:
    """One tall narrow page with three one-word lines: the cheapest page kraken segments."""
    image = render_page(page_texts(seed, 3, 1), width=150, height=750, font_size=24, margin=16).image
    return to_pdf([image], dpi=DPI)


def readings(service: OcrService) -> int:
    return len(READING.findall(service.process.log.read_text(errors="replace")))


def test_two_ocr_replicas_share_one_batch_and_each_document_is_read_once(
    db: Database, database_url: str, tmp_path: Path, processes: Processes
) -> None:
    model = tiny_recognition_model("safetensors")
    # One worker each: two documents at a time over the two replicas, as two small hosts would.
    # One model store for both (the deployment's shared ocr-models volume), a training folder each.
    replicas = [
        OcrService(processes, tmp_path / "ocr", model).start_process(
            OCR_WORKERS="1", OCR_TRAINING_DIR=str(tmp_path / f"training-{n}")
        )
        for n in range(2)
    ]
    urls = ",".join(replica.url for replica in replicas)
    backend = Backend(processes, backend_env(tmp_path, database_url, urls, APP_OCR_JOBS_CONCURRENCY="2")).start()
    watched = (backend.process, *(replica.process for replica in replicas))
    with backend.client() as client:
        ids = []
        for seed in range(DOCUMENTS):
            uploaded = client.post(
                "/api/documents",
                files={"file": (f"letter-{seed}.pdf", letter(7100 + seed), "application/pdf")},
                data={"title": f"Letter {seed}"},
            )
            assert uploaded.status_code == 201, uploaded.text
            ids.append(uploaded.json()["id"])
        started = client.post("/api/ocr/batches", json={"documentIds": ids})
        assert started.status_code == 202, started.text
        batch_id = started.json()["batchId"]

        def ended() -> dict[int, dict[str, object]] | None:
            jobs = {j["documentId"]: j for j in client.get(f"/api/ocr/batches/{batch_id}").json()["jobs"]}
            return jobs if all(j["status"] in ("DONE", "FAILED") for j in jobs.values()) else None

        jobs = wait_for(ended, "every document of the batch ends", watched, poll_s=0.5)
        lines = {i: client.get(f"/api/documents/{i}/lines").json() for i in ids}

    assert [(jobs[i]["status"], jobs[i]["pagesDone"], jobs[i]["attempts"]) for i in ids] == [("DONE", 1, 1)] * DOCUMENTS
    assert all(len(lines[i]) == 3 for i in ids), {i: len(lines[i]) for i in ids}
    counts = [readings(replica) for replica in replicas]
    assert all(count >= 1 for count in counts), f"a replica read nothing: {counts}"
    assert sum(counts) == DOCUMENTS, f"documents were read {sum(counts)} times in all: {counts}"
