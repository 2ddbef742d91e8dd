"""The database: engine, sessions, the declarative base, migrations.

SQLite (embedded default) and PostgreSQL (production) share one code path; everything that
differs between the two lives in this module and nowhere else.
"""

from __future__ import annotations

import fcntl
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic_core import from_json
from sqlalchemy import JSON, Connection, DateTime, Engine, MetaData, Row, Select, create_engine, event, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# Named constraints, so migrations can alter them on both databases (SQLite's batch mode needs names).
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    SQLite stores no time zone and hands back naive values; PostgreSQL keeps it. Values
    are stored as UTC and come back aware on both.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime stored; use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _normalise_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


_Select = TypeVar("_Select", bound=Select[Any])
_Row = TypeVar("_Row")


def _keyset(statement: _Select, key: InstrumentedAttribute[int], cursor: str | None, limit: int) -> _Select:
    if cursor is not None:
        statement = statement.where(key < int(cursor))
    return statement.order_by(key.desc()).limit(limit + 1)


def keyset_page(
    session: Session, statement: Select[_Row], key: InstrumentedAttribute[int], cursor: str | None, limit: int
) -> tuple[Sequence[_Row], str | None]:
    """Up to ``limit`` rows of ``statement``, ``key`` descending (newest first), after ``cursor``
    (a key); and the cursor of the next page, None on the last. Stable while rows are added."""
    rows = session.scalars(_keyset(statement, key, cursor, limit)).unique().all()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, str(getattr(rows[-1], key.key)) if more else None


def keyset_rows(
    session: Session, statement: _Select, key: InstrumentedAttribute[int], cursor: str | None, limit: int
) -> tuple[Sequence[Row[Any]], str | None]:
    """:func:`keyset_page` for a select of columns: plain rows (one named ``key``), no ORM objects."""
    rows = session.execute(_keyset(statement, key, cursor, limit)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, str(getattr(rows[-1], key.key)) if more else None


def skip_locked(statement: _Select) -> _Select:
    """``statement`` locking the rows it finds and passing over rows another transaction locked.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so several backend processes share one queue
    without waiting on or taking each other's rows. SQLite has no row locks (one writer at a
    time) and its dialect renders no locking clause; the caller's guarded UPDATE decides there.
    """
    return statement.with_for_update(skip_locked=True)


# The side engine's limits: a pool of one, and a wait for it, a connection and a statement of
# this long at most, well inside Prometheus's default 10 s scrape timeout.
SIDE_TIMEOUT_S = 2.0


def make_side_engine(url: str, timeout_s: float = SIDE_TIMEOUT_S) -> Engine:
    """A second, small engine for ``url``: one connection and short time limits on everything.

    For reads off the request path (the metrics' jobs-by-status gauge), so they answer even
    while the app's pool is exhausted, and give up quickly rather than hang while the database is slow.
    """
    url = _normalise_url(url)
    limits: dict[str, Any] = {"pool_size": 1, "max_overflow": 0, "pool_timeout": timeout_s}
    if not url.startswith("sqlite"):
        options = f"-c statement_timeout={int(timeout_s * 1000)} -c lock_timeout={int(timeout_s * 1000)}"
        connect_args = {"connect_timeout": max(1, round(timeout_s)), "options": options}
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args, **limits)
    engine = create_engine(url, connect_args={"timeout": timeout_s}, **limits)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


# Address space only (the file's pages are the OS page cache's); larger files are read past it as before.
SQLITE_MMAP_BYTES = 4 << 30


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers go on while one writer commits; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Reads straight from the OS page cache, shared by every connection, not copied into each
    # connection's small page cache first: a search reads a thousand index rows scattered over
    # the file (measured at 1M lines: half the SQL time of a common word's search).
    cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
    cursor.close()


def read_json(text: str | bytes) -> Any:
    try:
        return from_json(text)
    except ValueError:
        # What pydantic's parser refuses and the standard library reads: an escaped lone
        # surrogate ("\ud800"), which json.dumps writes for text from outside (an OCR service's answer).
        return json.loads(text)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout on every connection.

    JSON columns are decoded by pydantic's parser, twice as fast as the standard library's: a
    page view decodes two hundred of them (each line's baseline and polygon).
    """
    url = _normalise_url(url)
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, json_deserializer=read_json)
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30}, json_deserializer=read_json)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer backend: this code does not know its revision."""


# alembic's ``op`` and ``context`` are module-level proxies: one migration per process at a time.
_ALEMBIC = threading.Lock()
# The PostgreSQL advisory lock of start-up (any fixed 64-bit number no other program uses).
_STARTUP_LOCK_KEY = 0x46_41_4D_41_52_43_48_31  # "FAMARCH1"


@contextmanager
def startup_lock(engine: Engine) -> Iterator[None]:
    """Held by one backend process at a time per database: around migrations and the first admin.

    Two backends starting at once on a fresh database would otherwise both create the tables
    (one fails) and race on the first admin. PostgreSQL: a session advisory lock on a connection
    of its own (released when that connection ends, also if the process dies). SQLite: an
    ``flock`` on a file beside the database (the kernel drops it when the process dies); SQLite's
    own locking does not serialise the migrations, which run DDL outside a transaction there.
    Waits as long as the other process takes.
    """
    if is_sqlite(engine):
        database = engine.url.database
        if not database or database == ":memory:":
            yield  # a database of this process alone
            return
        with open(f"{database}.startup-lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _STARTUP_LOCK_KEY})
        try:
            yield
        finally:
            # Session locks outlive a connection returned to the pool: released here, always.
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _STARTUP_LOCK_KEY})


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def refuse_newer_schema(engine: Engine) -> None:
    """Raise ``SchemaTooNewError`` where a newer backend migrated the database (checked before serving)."""
    with engine.connect() as connection:
        _refuse_newer(connection, alembic_config())


def _refuse_newer(connection: Connection, config: Config) -> None:
    scripts = ScriptDirectory.from_config(config)
    known = {script.revision for script in scripts.walk_revisions()}
    unknown = [
        revision for revision in MigrationContext.configure(connection).get_current_heads() if revision not in known
    ]
    if unknown:
        raise SchemaTooNewError(
            f"The database is at migration revision {', '.join(unknown)}, which this backend does not know "
            f"(its newest is {scripts.get_current_head()}): a newer backend migrated it. Run that newer "
            "backend, or restore the backup made before its upgrade; this one will not touch the database."
        )


class BrokenReferencesError(RuntimeError):
    """Rows name rows that are not there (checked before a SQLite migration transaction commits)."""


@contextmanager
def migration_transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction for migrations (and a restore's loading), committed when the block ends cleanly.

    SQLite: foreign keys are switched off for it, because alembic's batch mode copies a table and
    drops the old one, and with foreign keys on that drop deletes every row referring to it
    (``ON DELETE CASCADE``: all lines, when ``pages`` is copied). pysqlite would also run the DDL
    outside any transaction, so one is begun by hand; every reference is checked before the commit.
    """
    if not is_sqlite(engine):
        with engine.begin() as connection:
            yield connection
        return
    with engine.connect() as connection:
        # Off before BEGIN: SQLite ignores the pragma inside a transaction.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            # Inside the try: a BEGIN that times out on another writer's lock must still switch
            # foreign keys on again before the connection goes back to the pool.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            yield connection
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise BrokenReferencesError(f"rows name rows that are not there (table, rowid, parent): {broken[:5]}")
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()


def migrate(engine: Engine) -> None:
    """``alembic upgrade head`` on ``engine``, from an empty database or any earlier revision.

    Raises ``SchemaTooNewError`` (and changes nothing) where a newer backend migrated the database.
    Callers that may start beside another process hold ``startup_lock`` around it.
    """
    config = alembic_config()
    with _ALEMBIC, migration_transaction(engine) as connection:
        _refuse_newer(connection, config)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def move_to_revision(connection: Connection, revision: str, *, downgrade: bool = False) -> None:
    """``alembic upgrade`` (or ``downgrade``) to ``revision`` on ``connection``, in its transaction
    (the restore of a backup: an empty database brought to the backup's revision, then to head)."""
    config = alembic_config()
    with _ALEMBIC:
        config.attributes["connection"] = connection
        (command.downgrade if downgrade else command.upgrade)(config, revision)


class Database:
    """The engine and its session factory, made once per process, and a small side engine
    (``make_side_engine``; it connects only when first used) for reads off the request path."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.side_engine = make_side_engine(url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits when the block ends cleanly and rolls back otherwise."""
        with self.sessions() as session, session.begin():
            yield session

    def ping(self) -> bool:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True

    def dispose(self) -> None:
        self.engine.dispose()
        self.side_engine.dispose()


# JSON columns: JSONB on PostgreSQL (compact, indexable), JSON text on SQLite.
JsonType = JSON().with_variant(JSONB(), "postgresql")
