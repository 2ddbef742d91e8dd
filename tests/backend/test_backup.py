"""Backups: ``backup`` → an empty installation → ``restore`` gives back every row and every original,
on SQLite and PostgreSQL and from one to the other; damaged, hostile or newer archives change nothing."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, inspect, select, update

from backend.__main__ import main
from backend.app import create_app
from backend.backup.archive import MANIFEST, MANIFEST_SUM, BackupArchive, BackupError
from backend.backup.restore import restore_backup
from backend.backup.service import create_backup, verify_backup
from backend.db import Base, Database, migrate
from backend.deps import build_services, build_storage
from backend.documents.models import DiscardedCorrection, Document, Line, Page, Writer
from backend.ocr.models import JobStatus, ModelSource, OcrBatch, OcrJob
from backend.storage import LocalStorage, Storage
from backend.training.models import RunStatus, TrainingKind
from backend.users.models import User
from tests.backend.conftest import (
    BOTH_STORES,
    DATABASE_KIND,
    Actors,
    bearer,
    make_settings,
    postgres_database,
    services_of,
)
from tests.backend.documents import make_document
from tests.backend.training_support import add_run

if TYPE_CHECKING:
    from tests.backend.s3_standin import MotoS3  # moto loads only for the runs that use S3

NOW = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
UNUSUAL = "ſ ꝛ e\u0301 שלום \U0001f600 \x00"[:-2]  # combining mark, long s, r rotunda, RTL, astral


def _now() -> datetime:
    return NOW


def _line(index: int, text: str) -> dict[str, object]:
    return {
        "index": index,
        "text": text,
        "confidence": 0.8125,
        "baseline": [[10, 20 + index], [90.5, 20 + index]],
        "polygon": [[10, 10], [90, 10], [90, 30], [10, 30]],
    }


def fill(actors: Actors, documents: int = 3, lines_per_page: int = 3) -> None:
    """Every kind of row: writers with a model, documents (one in the trash), pages, lines,
    corrections and their history, a discarded correction, users and credentials, OCR jobs, runs."""
    client = actors.client
    services = services_of(client)
    ids = []
    for seed in range(documents):
        response = client.post(
            "/api/documents",
            headers=actors.archivist,
            files={"file": ("a.pdf", make_document("pdf", 500 + seed, pages=2), "application/pdf")},
            data={"title": f"Brief {seed} {UNUSUAL}", "writer": "Anna Müller", "date": "1916-12"},
        )
        assert response.status_code == 201, response.text
        ids.append(int(response.json()["id"]))
    for document_id in ids:
        with services.db.sessions() as session:
            for number in (1, 2):
                lines = [_line(i, f"Liebe {UNUSUAL} {document_id}/{number}/{i}") for i in range(lines_per_page)]
                services.lines.store_page(
                    session, document_id, number, lines, model="kurrent", model_version="3", now=NOW
                )
    with services.db.session() as session:
        reviewer = session.scalar(select(User.id).where(User.username == "erika"))
        # A rendered page image: left out of the backup, its keys cleared on restore.
        session.execute(
            update(Page)
            .where(Page.number == 1)
            .values(image_key="pages/" + "a" * 32, thumbnail_key="pages/" + "b" * 32)
        )
        session.execute(update(Page).where(Page.number == 2).values(reviewed_at=NOW, reviewed_by=reviewer))
    line_ids = [line["id"] for line in client.get(f"/api/documents/{ids[0]}/lines", headers=actors.archivist).json()]
    for version, text in enumerate(("Liebe Mutter", "Liebe Mutter!"), start=1):
        response = client.patch(
            f"/api/lines/{line_ids[0]}", headers=actors.admin, json={"text": text, "version": version}
        )
        assert response.status_code == 200, response.text
    with services.db.sessions() as session:
        writer_id = session.scalars(select(Writer.id)).one()
    run_id = add_run(client, TrainingKind.WRITER, "anna-mueller-v1", [1, 2], writer_id=writer_id)
    add_run(client, TrainingKind.RECOGNITION, "kurrent-v2", [], status=RunStatus.FAILED, sequence=2)
    with services.db.session() as session:
        session.execute(update(Writer).values(model_name="anna-mueller-v1", model_run_id=run_id))
        admin = session.scalar(select(User.id).where(User.username == "admin"))
        assert admin is not None
        batch = OcrBatch(created_by=admin, created_at=NOW)
        session.add(batch)
        session.flush()
        session.add(
            OcrJob(
                batch_id=batch.id,
                document_id=ids[-1],
                status=JobStatus.DONE,
                model_source=ModelSource.WRITER,
                model_used="anna-mueller-v1",
                pages_done=2,
                pages_total=2,
                attempts=1,
                discard_corrections=True,
                corrections_discarded=1,
                created_by=admin,
                created_at=NOW,
                started_at=NOW,
                finished_at=NOW + timedelta(seconds=1.5),
            )
        )
        session.add(
            DiscardedCorrection(
                document_id=ids[-1],
                page_number=1,
                order_index=0,
                line_id=12345,
                ocr_text="Weihnaehten",
                text="Weihnachten",
                corrected_by=admin,
                corrected_at=NOW,
                version=2,
                history=[{"textBefore": "Weihnaehten", "textAfter": "Weihnachten", "$": "not a tag"}],
                discarded_by=admin,
                discarded_at=NOW,
                job_id=1,
            )
        )
    if documents > 2:
        assert client.delete(f"/api/documents/{ids[2]}", headers=actors.admin).status_code == 204


def rows_of(database: Database) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows, every column, by primary key; originals and page images compared elsewhere."""
    tables: dict[str, list[dict[str, Any]]] = {}
    with database.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            rows = [dict(row) for row in connection.execute(select(table).order_by(*table.primary_key)).mappings()]
            for row in rows:
                if table.name == "documents":
                    del row["storage_key"]
                if table.name == "pages":
                    row["image_key"] = row["thumbnail_key"] = None
            tables[table.name] = rows
    return tables


def originals_of(database: Database, storage: Storage) -> dict[int, bytes]:
    with database.sessions() as session:
        return {
            document.id: storage.open(document.storage_key).read() for document in session.scalars(select(Document))
        }


@contextmanager
def empty_database(kind: str, tmp_path: Path) -> Iterator[Database]:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'restored.db'}"
        database = Database(url)
        yield database
        database.dispose()
        return
    for url in postgres_database("backup_restore", "restoring into PostgreSQL"):
        database = Database(url)
        try:
            yield database
        finally:
            database.dispose()


@pytest.fixture
def backup_of(actors: Actors, tmp_path: Path) -> Callable[..., Path]:
    def take(name: str = "archive.tar", **options: Any) -> Path:
        services = services_of(actors.client)
        path = tmp_path / name
        create_backup(services.db.engine, services.documents.storage, path, now=_now, **options)
        return path

    return take


@pytest.mark.slow
@pytest.mark.parametrize("target", ["sqlite", "postgresql"])
def test_restore_brings_back_every_row_and_original(
    actors: Actors, backup_of: Callable[..., Path], tmp_path: Path, target: str
) -> None:
    fill(actors)
    services = services_of(actors.client)
    archive = backup_of()
    with empty_database(target, tmp_path) as restored:
        storage = LocalStorage(tmp_path / "restored-storage")
        result = restore_backup(restored.engine, storage, archive)
        assert result.originals == 3
        assert rows_of(restored) == rows_of(services.db)
        assert originals_of(restored, storage) == originals_of(services.db, services.documents.storage)
        with restored.sessions() as session:
            assert session.scalars(select(Page.image_key).where(Page.image_key.is_not(None))).all() == []
        settings = make_settings(restored.engine.url.render_as_string(hide_password=False), tmp_path / "app2")
        settings = settings.model_copy(update={"storage_dir": tmp_path / "restored-storage"})
        with TestClient(create_app(settings, services=build_services(settings))) as client:
            headers = bearer(client, "erika")  # the password still works
            page = client.get("/api/documents", headers=headers).json()
            assert len(page["items"]) == 2  # the third is in the trash
            # The search index, left out of the backup, was rebuilt from the restored lines.
            found = client.get("/api/search", params={"q": "Liebe Mutter"}, headers=headers)
            assert found.status_code == 200, found.text
            assert [hit["text"] for result in found.json()["results"] for hit in result["hits"]] == ["Liebe Mutter!"]
            upload = client.post(
                "/api/documents",
                headers=headers,
                files={"file": ("b.pdf", make_document("pdf", 999), "application/pdf")},
                data={"title": "Neu"},
            )
            assert upload.status_code == 201, upload.text  # ids (PostgreSQL sequences) continue after the loaded rows


def test_verify_backup_reports_the_rows(actors: Actors, backup_of: Callable[..., Path]) -> None:
    fill(actors, documents=2)
    result = verify_backup(backup_of())
    assert result.originals == 2
    assert result.rows["lines"] == 12 and result.rows["line_corrections"] == 2
    assert result.rows["users"] == 2 and result.rows["training_runs"] == 2


def test_backup_refuses_to_overwrite_and_leaves_no_partial_file(
    actors: Actors, backup_of: Callable[..., Path], tmp_path: Path
) -> None:
    fill(actors, documents=1)
    path = backup_of()
    before = path.read_bytes()
    with pytest.raises(BackupError, match="--force"):
        backup_of()
    assert path.read_bytes() == before
    backup_of(force=True)
    verify_backup(path)
    services = services_of(actors.client)
    with services.db.sessions() as session:
        key = session.scalars(select(Document.storage_key)).one()
    services.documents.storage.delete(key)  # an original gone: the backup fails, writes nothing
    with pytest.raises(BackupError, match="missing"):
        backup_of("second.tar")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("second")) == []


def test_the_archive_is_readable_by_its_owner_only_whatever_the_umask(
    actors: Actors, backup_of: Callable[..., Path]
) -> None:
    # It holds every letter and the users' password hashes; a default umask (022) would let
    # every account on the machine read it.
    fill(actors, documents=1)
    previous = os.umask(0o022)
    try:
        path = backup_of()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        backup_of(force=True)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(previous)


def test_restore_refuses_a_database_with_data(actors: Actors, backup_of: Callable[..., Path], tmp_path: Path) -> None:
    fill(actors, documents=1)
    archive = backup_of()
    services = services_of(actors.client)
    before = rows_of(services.db)
    storage = LocalStorage(tmp_path / "other-storage")
    with pytest.raises(BackupError, match="EMPTY"):
        restore_backup(services.db.engine, storage, archive)
    assert rows_of(services.db) == before
    assert not (tmp_path / "other-storage" / "originals").exists()


def _flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_a_damaged_or_truncated_archive_changes_nothing(
    actors: Actors, backup_of: Callable[..., Path], tmp_path: Path
) -> None:
    fill(actors, documents=1)
    original = backup_of().read_bytes()
    target = tmp_path / "damaged.tar"
    storage_root = tmp_path / "damaged-storage"

    @settings(max_examples=40, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.integers(0, len(original) - 1), st.booleans())
    def check(position: int, truncate: bool) -> None:
        target.write_bytes(original[:position] if truncate else original)
        if not truncate:
            _flip(target, position)
        with empty_database("sqlite", tmp_path) as database:
            with pytest.raises(BackupError):
                restore_backup(database.engine, LocalStorage(storage_root), target)
            assert inspect(database.engine).get_table_names() == []
        assert not (storage_root / "originals").exists() or not any((storage_root / "originals").iterdir())
        (tmp_path / "restored.db").unlink(missing_ok=True)

    check()


def _rewrite(
    source: Path,
    target: Path,
    *,
    rows: Callable[[str, list[bytes]], list[bytes]] | None = None,
    manifest: Callable[[dict[str, Any]], None] | None = None,
    extra: tuple[tuple[tarfile.TarInfo, bytes | None], ...] = (),
    tar_format: int = tarfile.USTAR_FORMAT,
    add: dict[str, bytes] | None = None,
) -> None:
    """A copy of an archive with rows or manifest changed and checksums made right again (a forger's work)."""
    with tarfile.open(source) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    document = json.loads(members.pop(MANIFEST))
    members.pop(MANIFEST_SUM)
    for name in list(members):
        if name.startswith("tables/") and rows is not None:
            lines = gzip.decompress(members[name]).splitlines(keepends=True)
            table = name.split("-", 1)[1].removesuffix(".jsonl.gz")
            changed = rows(table, lines)
            members[name] = gzip.compress(b"".join(changed))
            entry = next(t for t in document["tables"] if t["name"] == table)
            entry["rows"] = len(changed)
        document["files"][name] = {"sha256": hashlib.sha256(members[name]).hexdigest(), "size": len(members[name])}
    for name, content in (add or {}).items():
        members[name] = content
        document["files"][name] = {"sha256": hashlib.sha256(content).hexdigest(), "size": len(content)}
    if manifest is not None:
        manifest(document)
    data = json.dumps(document).encode()
    members[MANIFEST] = data
    members[MANIFEST_SUM] = hashlib.sha256(data).hexdigest().encode() + b"\n"
    with tarfile.open(target, "w", format=tar_format) as out:
        for info, content in extra:
            out.addfile(info, io.BytesIO(content) if content is not None else None)
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            out.addfile(info, io.BytesIO(content))


def test_a_backup_of_a_newer_schema_is_refused(actors: Actors, backup_of: Callable[..., Path], tmp_path: Path) -> None:
    fill(actors, documents=1)
    newer = tmp_path / "newer.tar"
    _rewrite(backup_of(), newer, manifest=lambda m: m.update(alembic_revision="9999"))
    with empty_database("sqlite", tmp_path) as database:
        with pytest.raises(BackupError, match="newer backend"):
            restore_backup(database.engine, LocalStorage(tmp_path / "s"), newer)
        assert inspect(database.engine).get_table_names() == []


def _hostile(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, 0 if kind != tarfile.REGTYPE else 4
    return info


@pytest.mark.parametrize(
    "member",
    [
        _hostile("../escape"),
        _hostile("/etc/passwd"),
        _hostile("models/../../escape"),
        _hostile("models/.meta/../../../x"),
        _hostile("originals/" + "0" * 31 + "g"),
        _hostile("models/link", tarfile.SYMTYPE, "/etc/passwd"),
        _hostile("models/hard", tarfile.LNKTYPE, "manifest.json"),
        _hostile("models/dev", tarfile.CHRTYPE),
        _hostile("x" * 200),  # a GNU long-name header: no extension headers at all
    ],
    ids=lambda info: info.name[:20],
)
def test_hostile_member_names_and_links_are_refused(
    actors: Actors, backup_of: Callable[..., Path], tmp_path: Path, member: tarfile.TarInfo
) -> None:
    fill(actors, documents=1)
    hostile = tmp_path / "hostile.tar"
    content = b"evil" if member.isreg() else None
    _rewrite(backup_of(), hostile, extra=((member, content),), tar_format=tarfile.GNU_FORMAT)
    with pytest.raises(BackupError, match=r"not a plain file|unexpected name"):
        verify_backup(hostile)
    with empty_database("sqlite", tmp_path) as database:
        with pytest.raises(BackupError, match=r"not a plain file|unexpected name"):
            restore_backup(database.engine, LocalStorage(tmp_path / "s"), hostile, models_dir=tmp_path / "m")
    assert not (tmp_path / "escape").exists() and not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "forged",
    [
        b"[" * 100_000 + b"]" * 100_000 + b"\n",  # nested brackets
        b'{"id": 1}\n',  # columns missing
        b"not json\n",
        b'{"$": "datetime", "v": "2026-01-01T00:00:00"}\n',
    ],
    ids=["nesting-bomb", "columns", "not-json", "not-a-row"],
)
def test_rows_that_do_not_parse_are_refused(
    actors: Actors, backup_of: Callable[..., Path], tmp_path: Path, forged: bytes
) -> None:
    fill(actors, documents=1)
    bad = tmp_path / "bad.tar"
    _rewrite(backup_of(), bad, rows=lambda table, lines: [*lines, forged] if table == "writers" else lines)
    with pytest.raises(BackupError, match="writers"):
        verify_backup(bad)


def test_a_failed_restore_leaves_nothing_behind(actors: Actors, backup_of: Callable[..., Path], tmp_path: Path) -> None:
    """The rows fail to load after the originals and the models were written: all of it is undone."""
    fill(actors, documents=2)
    models = tmp_path / "models"
    (models / ".meta").mkdir(parents=True)
    (models / "kurrent.safetensors").write_bytes(b"weights")
    (models / ".meta" / "kurrent.json").write_text("{}")
    broken = tmp_path / "broken.tar"
    # The same user twice: the primary key refuses the second, late in the load.
    _rewrite(
        backup_of(models_dir=models), broken, rows=lambda table, lines: lines + lines[:1] if table == "users" else lines
    )
    verify_backup(broken)  # the archive itself is whole
    for kind in ("sqlite", DATABASE_KIND):
        with empty_database(kind, tmp_path / kind) as database:
            restored_models = tmp_path / kind / "models"
            with pytest.raises(Exception, match=r"(?i)unique|duplicate|constraint"):
                restore_backup(database.engine, LocalStorage(tmp_path / kind / "s"), broken, models_dir=restored_models)
            with database.engine.connect() as connection:
                tables = inspect(connection).get_table_names()
                assert all(
                    connection.execute(select(func.count()).select_from(Base.metadata.tables[t])).scalar() == 0
                    for t in tables
                    if t in Base.metadata.tables
                )
            assert not any((tmp_path / kind / "s").rglob("*[0-9a-f]")), "originals left in the store"
            assert not restored_models.exists()


def test_models_go_in_and_come_back_without_the_stores_working_files(
    actors: Actors, backup_of: Callable[..., Path], tmp_path: Path
) -> None:
    fill(actors, documents=1)
    models = tmp_path / "models"
    for relative, content in {
        "kurrent.safetensors": b"weights",
        "anna-mueller-v1.mlmodel": b"coreml",
        ".meta/kurrent.json": b'{"kind": "recognition"}',
        ".backups/kurrent/v1-20260101T000000.safetensors": b"old",
        ".state.json": b'{"default": "kurrent"}',
        ".staging/upload-123": b"half",
        ".pins/worker-1/kurrent.safetensors": b"pinned",
        ".store.lock": b"",
    }.items():
        (models / relative).parent.mkdir(parents=True, exist_ok=True)
        (models / relative).write_bytes(content)
    (models / "linked.mlmodel").symlink_to(models / "kurrent.safetensors")
    archive = backup_of(models_dir=models)
    target = tmp_path / "restored-models"
    with empty_database("sqlite", tmp_path) as database:
        result = restore_backup(database.engine, LocalStorage(tmp_path / "s"), archive, models_dir=target)
    restored = {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert restored == {
        "kurrent.safetensors": b"weights",
        "anna-mueller-v1.mlmodel": b"coreml",
        ".meta/kurrent.json": b'{"kind": "recognition"}',
        ".backups/kurrent/v1-20260101T000000.safetensors": b"old",
        ".state.json": b'{"default": "kurrent"}',
    }
    assert result.models == 5
    # Readable by the OCR service's user, whoever ran the restore.
    assert {p.stat().st_mode & 0o777 for p in target.rglob("*") if p.is_file()} == {0o644}


@pytest.mark.slow
def test_a_backup_taken_while_corrections_are_saved_is_consistent(
    actors: Actors, backup_of: Callable[..., Path]
) -> None:
    """Each correction saved (the app's own path) updates its line and adds a history row in one
    transaction; the backup holds both or neither: every line's version is one more than its history rows."""
    # Enough lines that reading them takes a while: without the snapshot, corrections land between tables.
    fill(actors, documents=3, lines_per_page=400)
    services = services_of(actors.client)
    with services.db.sessions() as session:
        # Lines of documents not in the trash (those a person can correct).
        line_ids = list(session.scalars(select(Line.id).join(Page).join(Document).where(Document.deleted_at.is_(None))))
        admin = session.scalar(select(User.id).where(User.username == "admin"))
    stop = threading.Event()
    saved = [0]

    failures: list[BaseException] = []

    def correct() -> None:
        try:
            save_corrections()
        except BaseException as exc:  # reported by the test, not lost with the thread
            failures.append(exc)
            raise

    def save_corrections() -> None:
        chance = random.Random(7)
        while not stop.is_set():
            with services.db.sessions() as session:
                line_id = chance.choice(line_ids)
                version = session.get_one(Line, line_id).version
                user = session.get_one(User, admin)
                services.lines.correct(session, line_id, f"Fassung {saved[0]}", version, user, NOW)
            saved[0] += 1

    writer = threading.Thread(target=correct)
    writer.start()
    try:
        archives = []  # the backups during which corrections were saved
        for round_ in range(50):
            before = saved[0]
            path = backup_of(f"during-{round_}.tar")
            if saved[0] > before:
                archives.append(path)
            if len(archives) == 3:
                break
        assert len(archives) == 3, "corrections were not saved while backups ran"
    finally:
        stop.set()
        writer.join()
        assert failures == []
    for path in archives:
        with BackupArchive(path) as archive:
            tables = {t.name: t for t in archive.manifest.tables}
            lines = {row["id"]: row for row in archive.rows(tables["lines"])}
            history: dict[int, list[dict[str, Any]]] = {}
            for row in archive.rows(tables["line_corrections"]):
                history.setdefault(row["line_id"], []).append(row)
        for line_id, line in lines.items():
            rows = sorted(history.get(line_id, []), key=lambda r: r["version"])
            assert line["version"] == 1 + len(rows)
            assert line["text"] == (rows[-1]["text_after"] if rows else None)


def test_the_commands_back_up_check_and_restore(
    actors: Actors,
    tmp_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fill(actors, documents=1)
    monkeypatch.setenv("APP_DATABASE_URL", database_url)
    monkeypatch.setenv("APP_STORAGE_DIR", str(tmp_path / "storage"))
    path = tmp_path / "cli.tar"
    assert main(["backup", str(path)]) == 0
    assert main(["backup", str(path)]) == 1  # exists: refused without --force
    assert main(["verify-backup", str(path)]) == 0
    assert "lines: 6 rows" in capsys.readouterr().out
    _flip(path, path.stat().st_size // 2)
    assert main(["verify-backup", str(path)]) == 1
    assert "NOT a usable backup" in capsys.readouterr().err
    assert main(["restore", str(path)]) == 1  # damaged, and the database is not empty either


# What migration 0005 added: a backup made at 0004 has none of it.
# The columns of backed-up tables that revisions after 0004 added (0005: training; 0007: the UI's language).
ADDED_AFTER_0004 = {
    "writers": ("model_name", "model_run_id"),
    "pages": ("reviewed_at", "reviewed_by"),
    "ocr_jobs": ("model_source", "model_used", "model_note"),
    "users": ("language",),
}


def _as_of_0004(source: Path, target: Path) -> None:
    """The archive as a backend at revision 0004 would have written it (checksums right)."""
    with tarfile.open(source) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    manifest = json.loads(members[MANIFEST])
    out: dict[str, bytes] = {}
    tables: list[dict[str, Any]] = []
    for entry in manifest["tables"]:
        if entry["name"] == "training_runs":
            continue
        dropped = ADDED_AFTER_0004.get(entry["name"], ())
        rows = [json.loads(line) for line in gzip.decompress(members[entry["member"]]).splitlines()]
        lines = [json.dumps({k: v for k, v in row.items() if k not in dropped}).encode() + b"\n" for row in rows]
        member = f"tables/{len(tables):03d}-{entry['name']}.jsonl.gz"
        out[member] = gzip.compress(b"".join(lines))
        columns = [c for c in entry["columns"] if c not in dropped]
        tables.append({**entry, "member": member, "columns": columns})
    out.update({name: data for name, data in members.items() if name.startswith(("originals/", "models/"))})
    files = {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for name, data in out.items()}
    data = json.dumps({**manifest, "alembic_revision": "0004", "tables": tables, "files": files}).encode()
    out[MANIFEST] = data
    out[MANIFEST_SUM] = hashlib.sha256(data).hexdigest().encode() + b"\n"
    with tarfile.open(target, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in out.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


@pytest.mark.slow
@pytest.mark.parametrize("target", ["sqlite", "postgresql"])
def test_an_older_backup_is_restored_at_its_revision_then_migrated(
    actors: Actors, backup_of: Callable[..., Path], tmp_path: Path, target: str
) -> None:
    """Into a database an empty backend already migrated: down to the backup's revision, the rows
    loaded, then up to head — SQLite's table copies in the migrations lose no loaded line."""
    fill(actors)
    services = services_of(actors.client)
    older = tmp_path / "older.tar"
    _as_of_0004(backup_of(), older)
    with empty_database(target, tmp_path) as restored:
        migrate(restored.engine)  # a backend started once on it: at head, no rows
        restore_backup(restored.engine, LocalStorage(tmp_path / "restored-storage"), older)
        source, result = rows_of(services.db), rows_of(restored)
        for table, columns in ADDED_AFTER_0004.items():
            for row in source[table]:
                row.update(dict.fromkeys(columns))
        source["training_runs"] = []
        assert result == source
        with restored.engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(Line)).scalar() == 18


@pytest.mark.slow
@BOTH_STORES
def test_originals_stream_from_either_store_into_s3(
    actors: Actors, backup_of: Callable[..., Path], tmp_path: Path, moto_s3: MotoS3
) -> None:
    """From a folder or a bucket into a new bucket: the originals byte for byte."""
    fill(actors, documents=2)
    services = services_of(actors.client)
    archive = backup_of()
    settings = make_settings("sqlite://", tmp_path, **moto_s3.settings())
    bucket = build_storage(settings)
    with empty_database("sqlite", tmp_path) as restored:
        restore_backup(restored.engine, bucket, archive)
        assert originals_of(restored, bucket) == originals_of(services.db, services.documents.storage)
        assert rows_of(restored) == rows_of(services.db)


def test_rows_for_the_databases_own_tables_are_refused(
    actors: Actors, backup_of: Callable[..., Path], tmp_path: Path
) -> None:
    fill(actors, documents=1)
    forged = tmp_path / "forged.tar"
    source = backup_of()
    with BackupArchive(source) as archive:
        position = len(archive.manifest.tables)
    member = f"tables/{position:03d}-alembic_version.jsonl.gz"
    entry = {"name": "alembic_version", "member": member, "rows": 1, "columns": ["version_num"]}
    _rewrite(
        source,
        forged,
        add={member: gzip.compress(b'{"version_num": "0001"}\n')},
        manifest=lambda m: m["tables"].append(entry),
    )
    verify_backup(forged)  # well-formed; the restore refuses it
    with empty_database("sqlite", tmp_path) as database:
        with pytest.raises(BackupError, match="alembic_version"):
            restore_backup(database.engine, LocalStorage(tmp_path / "s"), forged)
        assert inspect(database.engine).get_table_names() == []


def test_a_different_model_already_in_the_store_is_not_overwritten(
    actors: Actors, backup_of: Callable[..., Path], tmp_path: Path
) -> None:
    fill(actors, documents=1)
    models = tmp_path / "models"
    models.mkdir()
    (models / "kurrent.safetensors").write_bytes(b"weights")
    (models / "same.mlmodel").write_bytes(b"same")
    archive = backup_of(models_dir=models)
    target = tmp_path / "restored-models"
    target.mkdir()
    (target / "kurrent.safetensors").write_bytes(b"the operator's own")
    (target / "same.mlmodel").write_bytes(b"same")
    with empty_database("sqlite", tmp_path) as database:
        with pytest.raises(BackupError, match=r"different kurrent\.safetensors"):
            restore_backup(database.engine, LocalStorage(tmp_path / "s"), archive, models_dir=target)
    assert (target / "kurrent.safetensors").read_bytes() == b"the operator's own"
    assert sorted(p.name for p in target.iterdir()) == ["kurrent.safetensors", "same.mlmodel"]
