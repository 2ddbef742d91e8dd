"""Helpers for the OCR job tests: a runner of the test's own against the scripted stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select

from backend.db import Database
from backend.ocr.models import JobStatus, OcrJob
from backend.ocr.queue import JobQueue
from backend.ocr.runner import JobRunner
from backend.ocr_client import BreakerConfig, OcrClient
from tests.backend.conftest import Actors, FakeClock, services_of
from tests.backend.documents import make_document
from tests.backend.ocr_client_support import QUIET_BREAKER, RecordedSleep, client_config

LEASE = timedelta(seconds=60)


def page_events(pages: int, per_page: int = 2, tag: str = "", first: int = 1) -> tuple[dict[str, Any], ...]:
    """What /ocr/stream sends for a document of ``pages`` pages (from page ``first``)."""
    events: list[dict[str, Any]] = []
    for page in range(first, pages + 1):
        events.append({"type": "page", "page": page, "pages": pages, "width": 100, "height": 80})
        events.extend(
            {
                "type": "line",
                "page": page,
                "index": i,
                "text": f"{tag}p{page} l{i}",
                "confidence": 0.9,
                "baseline": [[0, i], [9, i]],
                "polygon": [[0, 0], [9, 0], [9, 9], [0, 9]],
            }
            for i in range(per_page)
        )
    events.append({"type": "done", "pages": pages, "lines": pages * per_page, "model": "tiny"})
    return tuple(events)


def upload(actors: Actors, seed: int, pages: int, writer: str | None = None) -> int:
    response = actors.client.post(
        "/api/documents",
        headers=actors.archivist,
        files={"file": ("a.pdf", make_document("pdf", seed, pages=pages), "application/pdf")},
        data={"title": f"Brief {seed}", **({"writer": writer} if writer else {})},
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def runner(
    client: TestClient,
    url: str,
    owner: str = "runner-a",
    *,
    concurrency: int = 1,
    clock: FakeClock | None = None,
    breaker: BreakerConfig = QUIET_BREAKER,
    attempts: int = 1,
    db: Database | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    **config: Any,
) -> JobRunner:
    """A runner on the app's database whose OCR client calls the stand-in; never sleeps for real
    (unless given ``sleep``: then it watches its jobs, e.g. for a cancel, every 0.01 s).
    ``db``: a database handle of its own, as another backend process would have; ``config``:
    the OCR client's settings (tests/backend/ocr_client_support.py: client_config)."""
    services = services_of(client)
    queue = JobQueue(db or services.db, services.lines, owner, LEASE, metrics=services.metrics)
    ocr = OcrClient(
        client_config(url, breaker=breaker, attempts=attempts, **config), CollectorRegistry(), sleep=RecordedSleep()
    )
    return JobRunner(
        queue,
        ocr,
        services.documents.storage,
        concurrency=concurrency,
        poll_s=0.01,
        max_attempts=3,
        clock=clock or services.clock,
        sleep=sleep or _never_renew,
    )


async def _never_renew(seconds: float) -> None:
    # The renewer's sleep: the tests move the clock by hand, so renewal is left to page commits.
    await asyncio.Event().wait()


def drain(job_runner: JobRunner) -> None:
    async def go() -> None:
        try:
            await job_runner.drain()
        finally:
            await job_runner.client.aclose()

    asyncio.run(go())


def job_of(actors: Actors, job_id: int) -> dict[str, Any]:
    """``GET /api/ocr/jobs/{id}`` as the archivist: the job's JSON (200 asserted)."""
    response = actors.client.get(f"/api/ocr/jobs/{job_id}", headers=actors.archivist)
    assert response.status_code == 200, response.text
    return dict(response.json())


def job_counts(client: TestClient) -> dict[JobStatus, int]:
    services = services_of(client)
    with services.db.sessions() as session:
        rows = session.execute(select(OcrJob.status, func.count()).group_by(OcrJob.status)).all()
    return {status: count for status, count in rows}
