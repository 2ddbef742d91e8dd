"""Helpers for the evaluation and adoption tests: pages with lines where a test puts them, OCR
answers that read those lines with the texts a test picks, finished training runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.documents.models import Document, Line, Page, Writer
from backend.training.models import RunStatus, TrainingKind, TrainingRun
from backend.users.models import User
from tests.backend.conftest import services_of

LINE_HEIGHT = 30
LINE_GAP = 20
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def strip(index: int, width: int = 400) -> list[list[int]]:
    """The polygon of the page's ``index``-th line: horizontal strips one under another."""
    top = 10 + index * (LINE_HEIGHT + LINE_GAP)
    return [[10, top], [10 + width, top], [10 + width, top + LINE_HEIGHT], [10, top + LINE_HEIGHT]]


def baseline(index: int, width: int = 400) -> list[list[int]]:
    y = 10 + index * (LINE_HEIGHT + LINE_GAP) + LINE_HEIGHT - 5
    return [[10, y], [10 + width, y]]


@dataclass(frozen=True)
class Stored:
    """A line to store: what the OCR read, and what a person made of it (None: nobody looked)."""

    ocr_text: str
    text: str | None = None


def page_id(session: Session, document_id: int, number: int) -> int:
    found = session.scalar(select(Page.id).where(Page.document_id == document_id, Page.number == number))
    assert found is not None
    return found


def store_lines(
    client: TestClient, document_id: int, number: int, lines: Sequence[Stored], *, reviewed: bool = False
) -> int:
    """Put ``lines`` on the page (line i on strip i) as an OCR job and corrections would; its page id."""
    services = services_of(client)
    with services.db.session() as session:
        page = session.get(Page, page_id(session, document_id, number))
        assert page is not None
        page.width, page.height = 1000, 1400
        if reviewed:
            page.reviewed_at = NOW
        for index, line in enumerate(lines):
            session.add(
                Line(
                    page_id=page.id,
                    order_index=index,
                    baseline=baseline(index),
                    polygon=strip(index),
                    ocr_text=line.ocr_text,
                    text=line.text,
                    corrected_at=NOW if line.text is not None else None,
                )
            )
        return page.id


def ocr_answer(pages: int, readings: dict[int, Sequence[str | None]], model: str = "tiny") -> dict[str, Any]:
    """The body of ``POST /ocr`` for a document of ``pages`` pages: on page n, line i on strip i
    reads ``readings[n][i]`` (None: no line found there)."""
    return {
        "pages": [
            {
                "page": n,
                "width": 1000,
                "height": 1400,
                "lines": [
                    {"index": i, "text": text, "confidence": 0.9, "baseline": baseline(i), "polygon": strip(i)}
                    for i, text in enumerate(readings.get(n, ()))
                    if text is not None
                ],
            }
            for n in range(1, pages + 1)
        ],
        "model": model,
    }


def add_run(
    client: TestClient,
    kind: TrainingKind,
    model_name: str,
    heldout_page_ids: Sequence[int],
    *,
    writer_id: int | None = None,
    status: RunStatus = RunStatus.DONE,
    sequence: int = 1,
) -> int:
    """A run whose model the OCR service has installed (DONE unless asked otherwise); its id."""
    services = services_of(client)
    with services.db.session() as session:
        creator = session.scalars(select(User.id).order_by(User.id)).first()
        assert creator is not None, "add a user first"
        run = TrainingRun(
            kind=kind,
            writer_id=writer_id,
            status=status,
            active=True if status in (RunStatus.QUEUED, RunStatus.RUNNING) else None,
            sequence=sequence,
            model_name=model_name,
            heldout_page_ids=list(heldout_page_ids),
            created_by=creator,
            created_at=NOW,
        )
        session.add(run)
        session.flush()
        return run.id


def writer_id_of(client: TestClient, slug: str) -> int:
    with services_of(client).db.sessions() as session:
        return session.scalars(select(Writer.id).where(Writer.slug == slug)).one()


def writer_of(client: TestClient, document_id: int) -> Writer:
    with services_of(client).db.sessions() as session:
        document = session.get(Document, document_id)
        assert document is not None and document.writer is not None
        return document.writer


def run_of(client: TestClient, run_id: int) -> TrainingRun:
    with services_of(client).db.sessions() as session:
        run = session.get(TrainingRun, run_id)
        assert run is not None
        return run
