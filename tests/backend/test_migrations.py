"""Migrations down and up again on a database of the test's own, with rows in it (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

from backend.db import MIGRATIONS, Database
from backend.documents.models import Document, DocumentStatus
from backend.ocr.models import JobStatus, OcrJob
from backend.users.models import Role, User
from tests.backend.conftest import DATABASE_KIND, postgres_database

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
# What revision 0002 knows of a document's status.
STATUSES_0002 = {"NEW", "QUEUED", "RUNNING", "DONE", "FAILED"}


@pytest.fixture
def fresh_url(tmp_path: Path) -> Iterator[str]:
    if DATABASE_KIND == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
    else:
        yield from postgres_database("backend_test", "APP_TEST_DATABASE=postgresql")


def _alembic(engine: Engine, verb: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, verb)(config, revision)


def test_0003_goes_down_and_up_again_and_leaves_statuses_0002_can_read(fresh_url: str) -> None:
    database = Database(fresh_url)
    try:
        _alembic(database.engine, "upgrade", "head")
        with database.sessions() as session:
            user = User(username="erika", password_hash="x", role=Role.ARCHIVIST, is_active=True, created_at=NOW)
            session.add(user)
            session.flush()
            document = Document(
                title="Brief",
                title_folded="brief",
                media_type="application/pdf",
                storage_key="k",
                sha256="0" * 64,
                size_bytes=1,
                page_count=2,
                status=DocumentStatus.PARTIAL,
                created_by=user.id,
                created_at=NOW,
            )
            session.add(document)
            session.flush()
            session.add(
                OcrJob(
                    document_id=document.id,
                    status=JobStatus.CANCELLED,
                    pages_done=1,
                    pages_total=2,
                    attempts=1,
                    cancelled_by=user.id,
                    created_by=user.id,
                    created_at=NOW,
                )
            )
            session.commit()
        _alembic(database.engine, "downgrade", "0002")
        with database.engine.connect() as connection:
            statuses = set(connection.execute(text("SELECT status FROM documents")).scalars())
            jobs = connection.execute(text("SELECT status, pages_done FROM ocr_jobs")).all()
        # A cancel before 0003 left the document NEW (its pages keep their lines).
        assert statuses == {"NEW"} and statuses <= STATUSES_0002
        assert [tuple(job) for job in jobs] == [("CANCELLED", 1)]
        _alembic(database.engine, "upgrade", "head")
        _alembic(database.engine, "downgrade", "base")
        _alembic(database.engine, "upgrade", "head")
    finally:
        database.dispose()
