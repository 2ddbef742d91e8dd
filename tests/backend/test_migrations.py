"""Migrations down and up again on a database of the test's own, with rows in it (SQLite or PostgreSQL)."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, insert, inspect, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from backend.app import create_app
from backend.db import MIGRATIONS, Database, SchemaTooNewError, make_side_engine, migrate, migration_transaction
from backend.documents.models import Document, DocumentStatus, Line, Page, Writer
from backend.ocr.models import JobStatus, OcrJob
from backend.users.models import Role, User
from tests.backend.conftest import DATABASE_KIND, PASSWORD, make_settings, postgres_database

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
# What revision 0002 knows of a document's status.
STATUSES_0002 = {"NEW", "QUEUED", "RUNNING", "DONE", "FAILED"}


def _head() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


HEAD = _head()


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


def _user_and_document(session: Session, status: DocumentStatus) -> Document:
    """A user and a two-page document of theirs, flushed (ids known), in the schema of any revision."""
    # The user row by core insert, of the columns every revision has (the ORM's would name later ones).
    columns = {"username": "erika", "password_hash": "x", "role": Role.ARCHIVIST.value, "is_active": True}
    user_id = session.execute(insert(User.__table__).values(**columns, created_at=NOW)).inserted_primary_key[0]
    document = Document(
        title="Brief",
        title_folded="brief",
        media_type="application/pdf",
        storage_key="k",
        sha256="0" * 64,
        size_bytes=1,
        page_count=2,
        status=status,
        created_by=user_id,
        created_at=NOW,
    )
    session.add(document)
    session.flush()
    return document


def test_0003_goes_down_and_up_again_and_leaves_statuses_0002_can_read(fresh_url: str) -> None:
    database = Database(fresh_url)
    try:
        _alembic(database.engine, "upgrade", "head")
        with database.sessions() as session:
            document = _user_and_document(session, DocumentStatus.PARTIAL)
            session.add(
                OcrJob(
                    document_id=document.id,
                    status=JobStatus.CANCELLED,
                    pages_done=1,
                    pages_total=2,
                    attempts=1,
                    cancelled_by=document.created_by,
                    created_by=document.created_by,
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


def test_0006_indexes_the_lines_already_stored_and_goes_down_and_up_again(fresh_url: str) -> None:
    database = Database(fresh_url)
    try:
        _alembic(database.engine, "upgrade", "0005")
        with database.sessions() as session:
            document = _user_and_document(session, DocumentStatus.DONE)
            for number, texts in ((1, ["Liebe Mutter,", "frohe Weih-"]), (2, ["nachten!"])):
                page = Page(document_id=document.id, number=number)
                session.add(page)
                session.flush()
                for index, line_text in enumerate(texts):
                    session.add(
                        Line(page_id=page.id, order_index=index, baseline=[], polygon=[], ocr_text=line_text, version=1)
                    )
            session.commit()
        _alembic(database.engine, "upgrade", "0006")
        with database.engine.connect() as connection:
            rows = connection.execute(text("SELECT own, joined, bridge FROM search_lines ORDER BY line_id")).all()
        assert [tuple(row) for row in rows] == [
            ("liebe mutter", "", "frohe weih"),
            ("frohe weih", "weihnachten", "nachten"),
            ("nachten", "", ""),
        ]
        _alembic(database.engine, "downgrade", "0005")
        with database.engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
        assert not {name for name in tables if name.startswith("search_")}
        _alembic(database.engine, "upgrade", "head")
    finally:
        database.dispose()


def _start_backend(url: str, storage: str, ready: BarrierType) -> None:
    """One backend's start-up (migrations, the first admin) in a process of its own."""
    app = create_app(make_settings(url, Path(storage), admin_username="root", admin_password=PASSWORD))
    ready.wait()
    with TestClient(app):
        pass


def test_backends_starting_at_once_on_a_fresh_database_migrate_it_once_and_make_one_admin(
    fresh_url: str, tmp_path: Path
) -> None:
    spawn = multiprocessing.get_context("spawn")
    starts = 3
    ready = spawn.Barrier(starts)
    processes = [
        spawn.Process(target=_start_backend, args=(fresh_url, str(tmp_path / f"storage{n}"), ready))
        for n in range(starts)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    assert [process.exitcode for process in processes] == [0] * starts
    database = Database(fresh_url)
    try:
        with database.engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
            users = connection.execute(text("SELECT username, role FROM users")).all()
        assert [tuple(user) for user in users] == [("root", "admin")]
    finally:
        database.dispose()


def test_a_database_migrated_by_a_newer_backend_is_refused_naming_both_revisions(
    fresh_url: str, tmp_path: Path
) -> None:
    database = Database(fresh_url)
    try:
        migrate(database.engine)
        with database.engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
        with pytest.raises(SchemaTooNewError) as refused:
            migrate(database.engine)
        assert "0099_from_the_future" in str(refused.value) and HEAD in str(refused.value)
        started = subprocess.run(
            [sys.executable, "-m", "backend"],
            env={**os.environ, "APP_DATABASE_URL": fresh_url, "APP_STORAGE_DIR": str(tmp_path / "storage")},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert started.returncode == 2
        assert "newer than its code" in started.stderr
        assert "0099_from_the_future" in started.stderr and HEAD in started.stderr
        with database.engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
                "0099_from_the_future"
            ]
    finally:
        database.dispose()


def test_migrating_an_archive_with_lines_keeps_every_line(fresh_url: str) -> None:
    """0004 and 0005 copy ``pages`` on SQLite (batch mode); with foreign keys on, dropping the old
    table deleted every line (ON DELETE CASCADE). Migrations run with them off, checked at the end."""
    database = Database(fresh_url)
    try:
        _alembic(database.engine, "upgrade", "0003")
        with database.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO users (id, username, password_hash, role, is_active, created_at) "
                    "VALUES (1, 'erika', 'x', 'archivist', true, :now)"
                ),
                {"now": NOW},
            )
            connection.execute(
                text(
                    "INSERT INTO documents (id, title, title_folded, media_type, storage_key, sha256, size_bytes, "
                    "page_count, status, created_by, created_at) VALUES (1, 'Brief', 'brief', 'application/pdf', "
                    "'originals/" + "0" * 32 + "', 'abc', 1, 1, 'DONE', 1, :now)"
                ),
                {"now": NOW},
            )
            connection.execute(text("INSERT INTO pages (id, document_id, number) VALUES (1, 1, 1)"))
            for index in range(3):
                connection.execute(
                    text(
                        "INSERT INTO lines (id, page_id, order_index, baseline, polygon, ocr_text, version) "
                        "VALUES (:id, 1, :id, '[]', '[]', 'Liebe Mutter', 1)"
                    ),
                    {"id": index},
                )
        migrate(database.engine)
        with database.engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM lines")).scalar() == 3
            if DATABASE_KIND == "sqlite":  # switched on again for the pooled connection
                assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        database.dispose()


@pytest.mark.skipif(DATABASE_KIND != "sqlite", reason="SQLite's foreign-key switch")
def test_a_migration_transaction_that_cannot_begin_leaves_foreign_keys_on(tmp_path: Path) -> None:
    """Another writer holds the database past the busy timeout: BEGIN fails, and the pooled
    connection it switched foreign keys off on must not go back to the pool that way (every
    later delete would then skip its cascades)."""
    path = tmp_path / "locked.db"
    engine = make_side_engine(f"sqlite:///{path}", timeout_s=0.1)  # one pooled connection
    with engine.connect() as connection:  # connected (WAL, foreign keys on) before the lock
        connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        connection.commit()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="locked"), migration_transaction(engine):
            pass
        holder.execute("ROLLBACK")
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        holder.close()
        engine.dispose()


def _facts(connection: Connection, writer_id: int) -> list[tuple[bool, bool, bool]]:
    """Per indexed line in order: does the engine's row hold its writer, its year, the corrected flag?"""
    if connection.dialect.name == "sqlite":
        flags = connection.execute(text("SELECT flags FROM search_fts ORDER BY rowid")).scalars()
        return [(f"w{writer_id}" in f.split(), "y1914" in f.split(), "c" in f.split()) for f in flags]
    has = "tsv @@ CAST(:q AS tsquery)"
    rows = connection.execute(
        text(f"SELECT {has.replace(':q', ':w')}, {has.replace(':q', ':y')}, {has} FROM search_lines ORDER BY line_id"),
        {"w": f"'w{writer_id}':C", "y": "'y1914':C", "q": "'c':C"},
    )
    return [tuple(row) for row in rows]


def test_0008_puts_each_line_s_writer_and_year_in_the_engine_s_index_and_goes_down_again(fresh_url: str) -> None:
    database = Database(fresh_url)
    try:
        _alembic(database.engine, "upgrade", "0006")
        with database.sessions() as session:
            document = _user_and_document(session, DocumentStatus.DONE)
            writer = Writer(name="Anna", slug="anna", created_at=NOW)
            session.add(writer)
            session.flush()
            document.writer_id, document.date = writer.id, date(1914, 12, 1)
            page = Page(document_id=document.id, number=1)
            session.add(page)
            session.flush()
            for index, person in enumerate([None, "Liebe Mutter"]):
                line = Line(page_id=page.id, order_index=index, baseline=[], polygon=[], ocr_text="Liebe Muttcr")
                line.text, line.version = person, 1
                session.add(line)
            session.commit()
            writer_id = writer.id
        # The lines were stored before 0006 indexes them: 0006's own index first, then 0008's.
        _alembic(database.engine, "downgrade", "0005")
        _alembic(database.engine, "upgrade", "0006")
        with database.engine.connect() as connection:
            assert _facts(connection, writer_id) == [(False, False, False), (False, False, True)]
        _alembic(database.engine, "upgrade", "0008")
        with database.engine.connect() as connection:
            assert _facts(connection, writer_id) == [(True, True, False), (True, True, True)]
        _alembic(database.engine, "downgrade", "0007")
        with database.engine.connect() as connection:
            assert _facts(connection, writer_id) == [(False, False, False), (False, False, True)]
        _alembic(database.engine, "upgrade", "head")
    finally:
        database.dispose()


def test_0009_adds_postgresql_s_sample_indexes_and_goes_down_again(fresh_url: str) -> None:
    database = Database(fresh_url)
    postgres = database.engine.dialect.name == "postgresql"

    def indexes() -> set[str]:
        with database.engine.connect() as connection:
            return _index_names(connection)

    try:
        _alembic(database.engine, "upgrade", "0008")
        before = indexes()
        _alembic(database.engine, "upgrade", "0009")
        added = indexes() - before
        assert added == ({"ix_search_lines_tsv_sample_16", "ix_search_lines_tsv_sample_4"} if postgres else set())
        _alembic(database.engine, "downgrade", "0008")
        assert indexes() == before
        _alembic(database.engine, "upgrade", "head")
    finally:
        database.dispose()


def _lexemes(connection: Connection) -> list[set[str]]:
    """Per indexed line in order: the lexemes of its row in PostgreSQL's index."""
    rows = connection.execute(
        text("SELECT array_to_string(tsvector_to_array(tsv), ' ') FROM search_lines ORDER BY line_id")
    )
    return [set(row[0].split()) for row in rows]


@pytest.mark.skipif(DATABASE_KIND != "postgresql", reason="PostgreSQL's index only")
def test_0010_marks_the_next_line_s_words_and_the_facts_and_the_trash_and_goes_down_again(fresh_url: str) -> None:
    from backend.search.index import rebuild

    database = Database(fresh_url)
    try:
        _alembic(database.engine, "upgrade", "0006")
        with database.sessions() as session:
            kept = _user_and_document(session, DocumentStatus.DONE)
            writer = Writer(name="Anna", slug="anna", created_at=NOW)
            session.add(writer)
            session.flush()
            kept.writer_id, kept.date = writer.id, date(1914, 12, 1)
            trashed = Document(
                title="Alt",
                title_folded="alt",
                media_type="application/pdf",
                storage_key="k2",
                sha256="1" * 64,
                size_bytes=1,
                page_count=1,
                status=DocumentStatus.DONE,
                created_by=kept.created_by,
                created_at=NOW,
                deleted_at=NOW,
            )
            session.add(trashed)
            session.flush()
            for document, texts in ((kept, ["Liebe Weih-", "nachten Mutter"]), (trashed, ["Gruss"])):
                page = Page(document_id=document.id, number=1)
                session.add(page)
                session.flush()
                for index, ocr in enumerate(texts):
                    line = Line(page_id=page.id, order_index=index, baseline=[], polygon=[], ocr_text=ocr)
                    line.text, line.version = (ocr if index == 1 else None), 1
                    session.add(line)
            session.commit()
            writer_id, trashed_id = writer.id, trashed.id
        # The lines were stored before 0006 indexes them: indexed in 0006's format, 0008's facts added.
        _alembic(database.engine, "downgrade", "0005")
        _alembic(database.engine, "upgrade", "0009")
        with database.engine.connect() as connection:
            assert _facts(connection, writer_id) == [(True, True, False), (True, True, True), (False, False, False)]
        _alembic(database.engine, "upgrade", "0010")
        with database.engine.connect() as connection:
            migrated = _lexemes(connection)
        assert migrated == [
            {"liebe", "weih", "weihnachten", ">nachten", ">mutter", f"#w{writer_id}", "#y1914"},
            {"nachten", "mutter", "#c", f"#w{writer_id}", "#y1914"},
            {"gruss", "#t"},
        ]
        # What the migration wrote is what the code writes.
        rebuild(database.sessions)
        with database.engine.connect() as connection:
            assert _lexemes(connection) == migrated
        with database.sessions() as session:  # restored: no longer marked
            session.get_one(Document, trashed_id).deleted_at = None
            session.commit()
        with database.engine.connect() as connection:
            assert _lexemes(connection)[2] == {"gruss"}
        _alembic(database.engine, "downgrade", "0009")
        with database.engine.connect() as connection:
            assert _facts(connection, writer_id) == [(True, True, False), (True, True, True), (False, False, False)]
            found = connection.execute(
                text("SELECT count(*) FROM search_lines WHERE tsv @@ CAST(:q AS tsquery)"),
                {"q": "'liebe':A & 'mutter':B & 'weihnachten':A"},
            )
            assert found.scalar_one() == 1
        _alembic(database.engine, "upgrade", "head")
        with database.engine.connect() as connection:
            assert _lexemes(connection) == [*migrated[:2], {"gruss"}]
    finally:
        database.dispose()


def _index_names(connection: Connection) -> set[str]:
    """Every index on search_lines, from the engine's own catalogue."""
    if connection.dialect.name == "postgresql":
        query = "SELECT indexname FROM pg_indexes WHERE tablename = 'search_lines'"
    else:
        query = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'search_lines'"
    return set(connection.execute(text(query)).scalars())
