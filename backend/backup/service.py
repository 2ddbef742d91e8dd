"""Taking a backup, and checking one (``python -m backend backup PATH`` / ``verify-backup PATH``).

The rows and the list of originals are read in one snapshot (PostgreSQL: a REPEATABLE READ READ
ONLY transaction; SQLite: one read transaction, which WAL keeps on one snapshot), so a correction
saved meanwhile is either wholly in the backup or wholly out. Originals and model files are
streamed into the archive, never held whole in memory; table rows go through a temporary file
(a tar member's size comes before its bytes). The archive is written to ``PATH.partial``,
synced, and renamed, so ``PATH`` is either a whole backup or not there.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import io
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

from sqlalchemy import Connection, Engine, select

from backend.backup.archive import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MANIFEST_SUM,
    BackupArchive,
    BackupError,
    FileEntry,
    Manifest,
    TableEntry,
    encode_row,
    is_model_path,
    table_member,
)
from backend.backup.tables import (
    ORIGINALS_COLUMN,
    ORIGINALS_TABLE,
    REBUILT_COLUMNS,
    backed_up_tables,
    current_revision,
    known_revisions,
    left_out_tables,
)
from backend.storage import KEY, Storage

_CHUNK = 1024 * 1024
_FETCH = 1000
# The model store's working folders and lock (ocr_service/store.py): not models, never copied.
_STORE_SKIPPED = (".staging", ".pins", ".store.lock")


def app_version() -> str:
    try:
        return importlib.metadata.version("familienarchiv-ocr")
    except importlib.metadata.PackageNotFoundError:
        return "source"


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection whose every read sees one moment of the database."""
    if engine.dialect.name == "postgresql":
        options: dict[str, Any] = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        with engine.connect().execution_options(**options) as connection, connection.begin():
            yield connection
            return
    with engine.connect() as connection:
        # pysqlite starts no transaction for reads: each SELECT would see the database anew.
        connection.exec_driver_sql("BEGIN")
        try:
            yield connection
        finally:
            connection.rollback()


class _Hashing:
    """A file read through: counts and hashes the bytes that pass."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data


@dataclass
class BackupResult:
    path: Path
    manifest: Manifest
    notes: list[str] = field(default_factory=list)


class _ArchiveWriter:
    """Members added to the tar with their sha256 and size recorded for the manifest."""

    def __init__(self, tar: tarfile.TarFile, workdir: Path) -> None:
        self.tar = tar
        self.workdir = workdir
        self.files: dict[str, FileEntry] = {}

    def add_stream(self, name: str, source: IO[bytes], size: int, mtime: float) -> FileEntry:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, int(mtime), 0o600
        hashing = _Hashing(source)
        self.tar.addfile(info, hashing)  # reads exactly ``size`` bytes
        if source.read(1):
            raise BackupError(f"{name} grew while it was being backed up; run the backup again")
        entry = FileEntry(sha256=hashing.digest.hexdigest(), size=size)
        self.files[name] = entry
        return entry

    def add_file(self, name: str, path: Path, mtime: float) -> None:
        with path.open("rb") as source:
            self.add_stream(name, source, os.fstat(source.fileno()).st_size, mtime)


def _size_of(source: BinaryIO) -> int:
    size = source.seek(0, os.SEEK_END)
    source.seek(0)
    return size


def _add_originals(connection: Connection, storage: Storage, out: _ArchiveWriter, now: float) -> int:
    documents = next(t for t in backed_up_tables() if t.name == ORIGINALS_TABLE)
    key, sha = documents.c[ORIGINALS_COLUMN], documents.c.sha256
    count = 0
    for stored_key, sha256, document_id in connection.execute(
        select(key, sha, documents.c.id).order_by(documents.c.id)
    ):
        if not KEY.fullmatch(stored_key) or not stored_key.startswith("originals/"):
            raise BackupError(f"document {document_id} names no original of the expected shape ({stored_key!r})")
        try:
            source = storage.open(stored_key)
        except FileNotFoundError as exc:
            raise BackupError(
                f"the original of document {document_id} ({stored_key}) is missing from the store; "
                "if the document was just removed from the trash, run the backup again"
            ) from exc
        with source:
            entry = out.add_stream(stored_key, source, _size_of(source), now)
        if entry.sha256 != sha256:
            raise BackupError(
                f"the original of document {document_id} ({stored_key}) differs from the file uploaded "
                "(its checksum changed): the store is damaged; restore that file from an older backup"
            )
        count += 1
    return count


def _add_tables(connection: Connection, out: _ArchiveWriter, now: float) -> list[TableEntry]:
    entries = []
    for position, table in enumerate(backed_up_tables()):
        name = table_member(position, table.name)
        cleared = REBUILT_COLUMNS.get(table.name, ())
        rows = 0
        order = list(table.primary_key.columns) or list(table.columns)
        result = connection.execution_options(stream_results=True, yield_per=_FETCH).execute(
            select(table).order_by(*order)
        )
        with tempfile.TemporaryFile(dir=out.workdir) as spool:
            with gzip.GzipFile(fileobj=spool, mode="wb", compresslevel=6, mtime=0) as packed:
                for row in result.mappings():
                    values = dict(row)
                    for column in cleared:
                        values[column] = None
                    try:
                        packed.write(encode_row(values))
                    except TypeError as exc:
                        raise BackupError(f"table {table.name}: {exc}") from exc
                    rows += 1
            size = spool.tell()
            spool.seek(0)
            out.add_stream(name, spool, size, now)
        entries.append(TableEntry(name=table.name, member=name, rows=rows, columns=[c.name for c in table.columns]))
    return entries


def _add_models(models_dir: Path, out: _ArchiveWriter, notes: list[str]) -> None:
    root = models_dir.resolve()
    if not root.is_dir():
        raise BackupError(f"--models-dir {models_dir} is not a folder")
    for folder, dirs, files in os.walk(root):
        base = Path(folder)
        if base == root:
            dirs[:] = [d for d in dirs if d not in _STORE_SKIPPED]
        dirs.sort()
        for name in sorted(files):
            path = base / name
            relative = path.relative_to(root).as_posix()
            if relative in _STORE_SKIPPED or path.is_symlink() or not path.is_file():
                continue
            if not is_model_path(relative):
                notes.append(f"left out {relative} from the model store: not a name the store uses")
                continue
            out.add_file(f"models/{relative}", path, path.stat().st_mtime)


def create_backup(
    engine: Engine,
    storage: Storage,
    path: Path,
    *,
    models_dir: Path | None = None,
    force: bool = False,
    now: Callable[[], datetime],
) -> BackupResult:
    """Write the archive to ``path``; ``BackupError`` (and nothing at ``path``) when it cannot."""
    if path.is_dir():
        raise BackupError(f"{path} is a folder; give the archive's file name")
    if path.exists() and not force:
        raise BackupError(f"{path} exists already; choose another name or pass --force to replace it")
    partial = path.with_name(path.name + ".partial")
    notes: list[str] = []
    created = now()
    try:
        with _private_file(partial) as file:
            with tarfile.open(fileobj=file, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                out = _ArchiveWriter(tar, partial.parent)
                stamp = created.timestamp()
                with snapshot(engine) as connection:
                    revision = current_revision(connection)
                    head = known_revisions()[-1]
                    if revision != head:
                        raise BackupError(
                            f"the database is at migration revision {revision}, this backend's is {head}: "
                            "back it up with the backend that matches it (start this one once to migrate it)"
                        )
                    originals = _add_originals(connection, storage, out, stamp)
                    tables = _add_tables(connection, out, stamp)
                if models_dir is not None:
                    _add_models(models_dir, out, notes)
                left_out = ["page images (pages/): rendered again when first shown"]
                left_out += [f"table {name}: rebuilt on restore" for name in left_out_tables()]
                manifest = Manifest(
                    format=FORMAT,
                    format_version=FORMAT_VERSION,
                    app_version=app_version(),
                    alembic_revision=head,
                    created_at=created,
                    database_dialect=engine.dialect.name,
                    tables=tables,
                    files=out.files,
                    models_included=models_dir is not None,
                    left_out=left_out,
                )
                data = manifest.model_dump_json(indent=1).encode()
                checksum = hashlib.sha256(data).hexdigest().encode() + b"\n"
                for name, content in ((MANIFEST, data), (MANIFEST_SUM, checksum)):
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = len(content), int(stamp), 0o600
                    tar.addfile(info, io.BytesIO(content))
            file.flush()
            os.fsync(file.fileno())
        partial.replace(path)
        _sync_folder(path.parent)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    notes.insert(0, f"{originals} originals, {sum(t.rows for t in tables)} rows in {len(tables)} tables")
    return BackupResult(path, manifest, notes)


def _private_file(path: Path) -> BinaryIO:
    """``path`` created afresh for writing, readable by its owner only from the first byte: the
    archive holds every letter and the users' password hashes, and a default umask (022) would
    show them to every account on the machine. A file left there by a killed run is replaced
    (its mode is not trusted)."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(descriptor, "wb")


def _sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclass
class Verification:
    manifest: Manifest
    rows: dict[str, int]
    originals: int
    models: int


def verify_backup(path: Path) -> Verification:
    """Check the manifest, every checksum, every row; ``BackupError`` naming the first problem."""
    with BackupArchive(path) as archive:
        manifest = archive.manifest
        if manifest.alembic_revision not in known_revisions():
            raise BackupError(
                f"the backup is of database revision {manifest.alembic_revision}, which this backend "
                "does not know: it was made by a newer backend; check or restore it with that one"
            )
        rows: dict[str, int] = {}
        originals_seen: dict[str, str] = {}
        for table in manifest.tables:
            count = 0
            for row in archive.rows(table):
                if table.name == ORIGINALS_TABLE:
                    originals_seen[str(row.get(ORIGINALS_COLUMN))] = str(row.get("sha256"))
                count += 1
            rows[table.name] = count
        for name in archive.originals():
            archive.check_member(name)
        for name in archive.models():
            archive.check_member(name)
        originals = archive.originals()
        if sorted(originals_seen) != originals:
            raise BackupError("the documents' originals and the archive's originals/ members differ")
        for key, sha256 in originals_seen.items():
            if manifest.files[key].sha256 != sha256:
                raise BackupError(f"the original {key} is not the file its document was uploaded as")
        return Verification(manifest, rows, len(originals), len(archive.models()))
