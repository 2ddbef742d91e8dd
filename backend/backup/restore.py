"""Bringing a backup back into an empty installation (``python -m backend restore PATH``).

All or nothing: the whole archive is checked first (a damaged or truncated one changes nothing);
then, in ONE database transaction, the empty database is brought to the backup's revision, the
rows are loaded, PostgreSQL's sequences are moved past them, and the database is upgraded to this
code's head. Originals go into the store (new keys) and models into the model store before the
commit; any failure rolls the transaction back and removes every file the restore wrote.
SQLite runs it with foreign keys off (a migration's batch copy would otherwise cascade deletes of
loaded rows) and checks every reference before the commit (``backend.db.migration_transaction``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Connection, Engine, Integer, MetaData, Table, func, insert, inspect, literal, select
from sqlalchemy import column as sql_column
from sqlalchemy import table as sql_table

from backend.backup.archive import BackupArchive, BackupError, TableEntry
from backend.backup.service import verify_backup
from backend.backup.tables import ORIGINALS_COLUMN, ORIGINALS_TABLE, current_revision, known_revisions
from backend.db import Base, migration_transaction, move_to_revision, startup_lock
from backend.search.index import index_everything_on
from backend.storage import Storage

log = logging.getLogger(__name__)

_BATCH = 1000
_CHUNK = 1024 * 1024


@dataclass
class RestoreResult:
    revision: str
    rows: dict[str, int]
    originals: int
    models: int
    notes: list[str] = field(default_factory=list)


class _Written:
    """Every file the restore has written so far, removed again when it fails."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.keys: list[str] = []
        self.paths: list[Path] = []
        self.folders: list[Path] = []

    def make_folder(self, folder: Path) -> None:
        missing = [parent for parent in (folder, *folder.parents) if not parent.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        self.folders.extend(reversed(missing))

    def undo(self) -> None:
        for key in self.keys:
            try:
                self.storage.delete(key)
            except OSError as exc:
                log.error("the failed restore could not remove %s from the store: %s", key, exc)
        for path in self.paths:
            path.unlink(missing_ok=True)
        for folder in reversed(self.folders):
            with contextlib.suppress(OSError):  # not empty: something else put a file there meanwhile
                folder.rmdir()


def _refuse_non_empty(connection: Connection) -> str | None:
    """The database's revision (None: no tables yet); ``BackupError`` if any table holds a row."""
    revision = current_revision(connection)
    revisions = known_revisions()
    if revision is not None and revision not in revisions:
        raise BackupError(f"the database is at revision {revision}, which this backend does not know; refused")
    present = set(inspect(connection).get_table_names())
    filled = [
        table.name
        for table in Base.metadata.sorted_tables
        if table.name in present
        and connection.execute(select(literal(1)).select_from(table).limit(1)).first() is not None
    ]
    if filled:
        raise BackupError(
            "restore brings a backup into an EMPTY installation only, and this database holds data "
            f"(tables {', '.join(filled)}). Point APP_DATABASE_URL at a new, empty database (and "
            "APP_STORAGE_* at an empty store); nothing was changed."
        )
    return revision


def _bring_to(connection: Connection, current: str | None, target: str) -> None:
    revisions = known_revisions()
    if current == target:
        return
    if current is not None and revisions.index(current) > revisions.index(target):
        move_to_revision(connection, target, downgrade=True)
    else:
        move_to_revision(connection, target)


def _insert_target(connection: Connection, entry: TableEntry) -> Table:
    """The table as the database has it at the backup's revision, with this code's column types
    where it knows the column (they turn the archive's values into what the database stores)."""
    if entry.name == "alembic_version" or entry.name.startswith(("sqlite_", "pg_")):
        raise BackupError(f"the backup holds rows for {entry.name}, a table of the database's own; refused")
    if not inspect(connection).has_table(entry.name):
        raise BackupError(f"the backup holds table {entry.name}, which its own revision does not have")
    reflected = Table(entry.name, MetaData(), autoload_with=connection)
    unknown = [column for column in entry.columns if column not in reflected.c]
    if unknown:
        raise BackupError(f"the backup's table {entry.name} has columns its revision does not: {unknown}")
    code = Base.metadata.tables.get(entry.name)
    columns = []
    for name in entry.columns:
        type_ = code.c[name].type if code is not None and name in code.c else reflected.c[name].type
        columns.append(Column(name, type_, primary_key=reflected.c[name].primary_key))
    return Table(entry.name, MetaData(), *columns)


def _load(connection: Connection, archive: BackupArchive, keys: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in archive.manifest.tables:
        target = _insert_target(connection, entry)
        batch: list[dict[str, Any]] = []
        counts[entry.name] = 0
        for row in archive.rows(entry):
            if entry.name == ORIGINALS_TABLE:
                old = row.get(ORIGINALS_COLUMN)
                if old not in keys:
                    raise BackupError(f"a document of the backup names an original it does not hold ({old!r})")
                row[ORIGINALS_COLUMN] = keys[old]
            batch.append(row)
            if len(batch) >= _BATCH:
                connection.execute(insert(target), batch)
                batch = []
            counts[entry.name] += 1
        if batch:
            connection.execute(insert(target), batch)
    return counts


def _reset_sequences(connection: Connection) -> None:
    """PostgreSQL: every serial column's sequence continues after the largest id loaded."""
    if connection.dialect.name != "postgresql":
        return  # SQLite's INTEGER PRIMARY KEY continues after the largest rowid by itself
    # pg_get_serial_sequence parses its table argument as SQL: a quoted name; the column is taken as it is.
    quote = connection.dialect.identifier_preparer.quote
    inspector = inspect(connection)
    for table in inspector.get_table_names():
        keys = set(inspector.get_pk_constraint(table)["constrained_columns"])
        for column in inspector.get_columns(table):
            if column["name"] not in keys or not isinstance(column["type"], Integer):
                continue
            name = column["name"]
            largest = select(func.max(sql_column(name))).select_from(sql_table(table)).scalar_subquery()
            sequence = func.pg_get_serial_sequence(quote(table), name)
            connection.execute(select(func.setval(sequence, func.coalesce(largest, 0) + 1, False)))


def _save_originals(archive: BackupArchive, written: _Written) -> dict[str, str]:
    keys: dict[str, str] = {}
    for name in archive.originals():
        with archive.open_member(name) as source:
            key = written.storage.save(source)
        written.keys.append(key)
        keys[name] = key
    return keys


def _write_models(archive: BackupArchive, models_dir: Path, written: _Written) -> int:
    root = models_dir.resolve()
    written.make_folder(root)
    count = 0
    for name in archive.models():
        target = root / name.removeprefix("models/")
        written.make_folder(target.parent)
        if not target.parent.resolve().is_relative_to(root):
            raise BackupError(f"{name} would land outside --models-dir; refused")
        expected = archive.manifest.files[name].sha256
        if target.exists():
            if _sha256(target) == expected:
                continue
            raise BackupError(
                f"--models-dir already holds a different {target.name}; restore into an empty model store"
            )
        with (
            archive.open_member(name) as source,
            tempfile.NamedTemporaryFile(dir=target.parent, prefix=".restore-", delete=False) as out,
        ):
            staging = Path(out.name)
            try:
                shutil.copyfileobj(source, out, _CHUNK)
                out.flush()
                os.fsync(out.fileno())
                # Readable by the OCR service's user, which is not the user the restore runs as in compose.
                os.fchmod(out.fileno(), 0o644)
                # A link fails where a file appeared meanwhile: nothing of the operator's is overwritten.
                os.link(staging, target)
            finally:
                staging.unlink(missing_ok=True)
        written.paths.append(target)
        count += 1
    return count


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def restore_backup(engine: Engine, storage: Storage, path: Path, *, models_dir: Path | None = None) -> RestoreResult:
    """Restore ``path`` into the empty database of ``engine`` and ``storage``; ``BackupError``
    (with nothing changed) when the archive is damaged, newer than the code, or the target not empty."""
    verify_backup(path)
    notes: list[str] = []
    with BackupArchive(path) as archive, startup_lock(engine):
        manifest = archive.manifest
        written = _Written(storage)
        try:
            with migration_transaction(engine) as connection:
                _bring_to(connection, _refuse_non_empty(connection), manifest.alembic_revision)
                models = 0
                if models_dir is not None:
                    models = _write_models(archive, models_dir, written)
                    if not archive.models():
                        notes.append("the backup holds no models (it was made without --models-dir)")
                elif archive.models():
                    notes.append(
                        "the backup's models were not restored: pass --models-dir with the model store's folder"
                    )
                keys = _save_originals(archive, written)
                counts = _load(connection, archive, keys)
                _reset_sequences(connection)
                move_to_revision(connection, "head")
                # The search index is left out of backups: made again from the restored lines.
                notes.append(f"search index rebuilt: {index_everything_on(connection)} lines")
        except BaseException:
            written.undo()
            raise
    return RestoreResult(manifest.alembic_revision, counts, len(keys), models, notes)
