"""Helpers for the training-run tests: scripted training data and judge, an app wired to them.

The run lifecycle reaches the training data and the judging of models through two small
interfaces (``backend/training/ports.py``); these fakes script them, so the lifecycle is
tested without rendering pages or reading held-out pages with real OCR.
"""

from __future__ import annotations

import random
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from backend.app import create_app
from backend.db import Database
from backend.deps import Clock, build_services, utc_now
from backend.documents.render import RenderLimits
from backend.storage import Storage
from backend.training.models import TrainingKind, TrainingRun
from backend.training.ports import PageLike
from backend.users.models import Role
from tests.backend.conftest import PASSWORD, add_user, bearer, make_settings, services_of
from tests.backend.documents import make_document
from tests.backend.ocr_standin import StandIn


@dataclass(frozen=True)
class FakePage:
    page_id: int
    lines: int
    document_id: int = 1
    page_number: int = 1


@dataclass(frozen=True)
class Summary:
    pages: int
    lines: int


def pages(count: int, lines: int, first_id: int = 1) -> list[FakePage]:
    return [FakePage(first_id + n, lines, page_number=n + 1) for n in range(count)]


class FakeData:
    """Eligible pages per (kind, writer id), a seeded held-out split, and a small real ZIP."""

    def __init__(self) -> None:
        self.pages: dict[tuple[TrainingKind, int | None], list[FakePage]] = {}
        self.new_lines: dict[int, int] = {}
        self.asked_since: dict[int, datetime | None] = {}
        self.zipped: list[list[int]] = []
        # Called inside the guard, before the run is inserted (a test holds two starts there).
        self.on_split: Callable[[], None] = lambda: None

    def set(self, kind: TrainingKind, found: list[FakePage], writer_id: int | None = None) -> None:
        self.pages[(kind, writer_id)] = found

    def eligible_pages(self, session: Session, kind: TrainingKind, writer_id: int | None = None) -> Sequence[PageLike]:
        return list(self.pages.get((kind, writer_id), []))

    def split_heldout(
        self, found: Sequence[PageLike], share: float, min_pages: int, seed: int
    ) -> tuple[Sequence[PageLike], Sequence[PageLike]]:
        self.on_split()
        held = max(min_pages, round(share * len(found)))
        chosen = set(random.Random(seed).sample(sorted(p.page_id for p in found), held))
        return [p for p in found if p.page_id not in chosen], [p for p in found if p.page_id in chosen]

    def write_training_zip(
        self,
        session: Session,
        storage: Storage,
        limits: RenderLimits,
        found: Sequence[PageLike],
        kind: TrainingKind,
        dest: BinaryIO,
    ) -> Summary:
        with zipfile.ZipFile(dest, "w") as archive:
            for page in found:
                archive.writestr(f"p{page.page_id}.xml", f"<page lines='{page.lines}'/>")
        self.zipped.append([p.page_id for p in found])
        return Summary(len(found), sum(p.lines for p in found))

    def eligible_by_writer(self, session: Session) -> Mapping[int, Sequence[PageLike]]:
        return {
            writer_id: list(found)
            for (kind, writer_id), found in self.pages.items()
            if kind is TrainingKind.WRITER and writer_id is not None and found
        }

    def new_lines_by_writer(self, session: Session, since: Mapping[int, datetime | None]) -> Mapping[int, int]:
        self.asked_since.update(since)
        return {writer_id: self.new_lines[writer_id] for writer_id in since if writer_id in self.new_lines}


@dataclass
class FakeJudge:
    """Records what it was asked; judging stores two CERs, adopting by hand marks the run adopted."""

    db: Database | None = None
    judged: list[int] = field(default_factory=list)
    adopted_by_hand: list[tuple[int, int]] = field(default_factory=list)

    def _store(self, run_id: int, **values: Any) -> None:
        assert self.db is not None
        with self.db.sessions() as session:
            session.execute(update(TrainingRun).where(TrainingRun.id == run_id).values(**values))
            session.commit()

    async def judge_and_adopt(self, run_id: int) -> None:
        self.judged.append(run_id)
        self._store(run_id, heldout_cer=0.05, replaced_cer=0.2, replaced_model="kurrent", adopted=True)

    async def adopt_by_hand(self, run_id: int, admin_id: int) -> None:
        self.adopted_by_hand.append((run_id, admin_id))
        self._store(run_id, adopted=True, adopted_by=admin_id, adoption_note="adopted by hand")


@dataclass
class TrainingApp:
    client: TestClient
    admin: dict[str, str]
    archivist: dict[str, str]
    data: FakeData
    judge: FakeJudge

    @property
    def db(self) -> Database:
        return services_of(self.client).db

    def run(self, run_id: int) -> dict[str, Any]:
        response = self.client.get(f"/api/admin/training/runs/{run_id}", headers=self.admin)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait(self, run_id: int, condition: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """Poll the run until ``condition`` holds (a generous guard, never a fixed sleep)."""
        deadline = time.monotonic() + 30
        while True:
            run = self.run(run_id)
            if condition(run):
                return run
            assert time.monotonic() < deadline, f"run {run_id} never became {what}: {run}"
            time.sleep(0.01)

    def wait_status(self, run_id: int, status: str) -> dict[str, Any]:
        return self.wait(run_id, lambda run: run["status"] == status, status)

    def upload(self, seed: int, writer: str | None = None) -> int:
        data = {"title": f"Brief {seed}"} | ({"writer": writer} if writer else {})
        response = self.client.post(
            "/api/documents",
            headers=self.archivist,
            files={"file": ("a.pdf", make_document("pdf", seed), "application/pdf")},
            data=data,
        )
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def writer_id(self, slug: str) -> int:
        from sqlalchemy import select

        from backend.documents.models import Writer

        with self.db.sessions() as session:
            return int(session.scalar(select(Writer.id).where(Writer.slug == slug)) or 0)


# Thresholds small enough for scripted pages: 6 lines (writer 4), 2 reviewed pages, 1 held out.
TRAINING_SETTINGS: dict[str, Any] = {
    "ocr_training_token": "s3cret",
    "ocr_attempts": 1,
    "ocr_backoff_s": 0,
    "training_poll_s": 0.02,
    "training_lease_s": 30,
    "training_min_lines": 6,
    "training_min_writer_lines": 4,
    "training_min_segmentation_pages": 2,
    "training_heldout_share": 0.2,
    "training_heldout_min_pages": 1,
}


def training_app_factory(database_url: str, tmp_path: Path, standin: StandIn) -> Iterator[Callable[..., TrainingApp]]:
    """Start apps (lifespans) on the test database, each with the same fakes; all stopped at the end."""
    data, judge = FakeData(), FakeJudge()
    clients: list[TestClient] = []
    users_made = False

    def start(clock: Clock = utc_now, **overrides: Any) -> TrainingApp:
        nonlocal users_made
        values = {"ocr_urls": standin.url, **TRAINING_SETTINGS, **overrides}
        settings = make_settings(database_url, tmp_path, **values)
        services = build_services(settings, clock=clock, training_data=data, judge=judge)
        judge.db = services.db
        client = TestClient(create_app(settings, services=services))
        client.__enter__()
        clients.append(client)
        if not users_made:
            add_user(client, "admin", Role.ADMIN)
            add_user(client, "erika", Role.ARCHIVIST)
            users_made = True
        return TrainingApp(client, bearer(client, "admin", PASSWORD), bearer(client, "erika"), data, judge)

    yield start
    for client in clients:
        stop(client)


def stop(client: TestClient) -> None:
    """End the app's lifespan (as a backend that stops); idempotent."""
    if getattr(client, "_stopped", False):
        return
    client.__exit__(None, None, None)
    client._stopped = True  # type: ignore[attr-defined]


# --- shared by the training-run test modules ----------------------------------------------------

RUN_KEYS = {
    "id", "kind", "writer", "status", "ocrJobId", "sequence", "baseModel", "modelName", "modelVersion",
    "lineCount", "pageCount", "heldoutLineCount", "heldoutPageCount", "epoch", "metrics", "accuracy", "cer",
    "info", "heldoutCer", "replacedModel", "replacedCer", "adopted", "adoptedAt", "adoptedBy", "adoptionNote",
    "errorCode", "errorMessage", "cancelRequested", "cancelledBy", "createdBy", "createdAt", "startedAt",
    "finishedAt",
}  # fmt: skip
KIND_KEYS = {
    "kind", "eligibleLines", "eligiblePages", "threshold", "thresholdUnit", "canStart", "reason", "reasonCode",
    "reasonDetails",
}  # fmt: skip
WRITER = "Anna Müller"
SLUG = "anna-mueller"


def enough(app: TrainingApp, kind: TrainingKind, writer_id: int | None = None) -> None:
    """Data above the test thresholds: 5 pages of 3 lines (1 held out: 12 lines left ≥ 6)."""
    app.data.set(kind, pages(5, 3), writer_id)


def start(app: TrainingApp, kind: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return app.client.post(f"/api/admin/training/{kind}", headers=app.admin, json=body)


def body_of(kind: TrainingKind) -> dict[str, Any] | None:
    return {"writer": SLUG} if kind is TrainingKind.WRITER else None


def prepare(app: TrainingApp, kind: TrainingKind, found: list[Any] | None = None) -> int | None:
    """Data of ``kind`` (for a writer run: Anna Müller's, with a document of hers); her id."""
    writer_id = None
    if kind is TrainingKind.WRITER:
        app.upload(1, WRITER)
        writer_id = app.writer_id(SLUG)
    app.data.set(kind, found if found is not None else pages(5, 3), writer_id)
    return writer_id
