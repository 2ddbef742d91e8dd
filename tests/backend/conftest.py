"""Backend fixtures: one database per test run (SQLite, or PostgreSQL with APP_TEST_DATABASE=postgresql).

The whole backend suite runs on both. On PostgreSQL each run creates a database of its own
on 127.0.0.1:5432 (user postgres, trust auth; override with APP_TEST_POSTGRES_URL) and drops
it at the end; a machine without PostgreSQL skips the run with the reason shown.
Every test starts from empty tables (rows are deleted after each test; the schema stays).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from backend.app import create_app
from backend.db import Base, Database, migrate
from backend.deps import Clock, Services, build_services, utc_now
from backend.settings import Settings
from backend.users.models import Role, User
from tests.backend.ocr_standin import StandIn, start_standin
from tests.support.processes import Processes

if TYPE_CHECKING:
    from tests.backend.s3_standin import MotoS3
    from tests.backend.training_runs import TrainingApp

DATABASE_KIND = os.environ.get("APP_TEST_DATABASE", "sqlite")
POSTGRES_URL = os.environ.get("APP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def postgres_database(prefix: str, needed_for: str) -> Iterator[str]:
    """A fresh database on the build machine's PostgreSQL (its URL), dropped at the end; the
    test is skipped, with the reason shown, where PostgreSQL is not reachable."""
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"{needed_for}, but PostgreSQL is not reachable at {POSTGRES_URL}: {exc}")
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if DATABASE_KIND == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'backend.db'}"
    elif DATABASE_KIND == "postgresql":
        yield from postgres_database("backend_test", "APP_TEST_DATABASE=postgresql")
    else:
        pytest.fail(f"APP_TEST_DATABASE must be sqlite or postgresql, not {DATABASE_KIND!r}")


@pytest.fixture(scope="session")
def migrated(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    migrate(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def db(migrated: Database) -> Iterator[Database]:
    """The test run's database, emptied after the test."""
    yield migrated
    with migrated.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(delete(table))


def make_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "storage_dir": tmp_path / "storage",
        # The cheapest Argon2 the settings allow: tests hash many passwords on two cores.
        "argon2_time_cost": 1,
        "argon2_memory_kib": 8192,
        # No job runner in the app: OCR tests drive runners of their own (tests/backend/ocr_jobs.py).
        "ocr_jobs_concurrency": 0,
    }
    values.update(overrides)
    return Settings(**values)


AppFactory = Callable[..., TestClient]


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """moto's S3 server (server mode, 127.0.0.1, a free port) for the whole run; see s3_standin.py."""
    from tests.backend.s3_standin import MotoS3  # moto loads only for runs that use S3

    server = MotoS3()
    yield server
    server.stop()


@pytest.fixture
def storage_kind(request: pytest.FixtureRequest) -> str:
    """Where the app's originals live: "local" unless a test parametrizes it (indirect) with "s3"."""
    kind: str = getattr(request, "param", "local")
    return kind


@pytest.fixture
def storage_settings(storage_kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings overrides for the test's storage: none for a folder, a fresh bucket for S3."""
    if storage_kind == "local":
        return {}
    moto: MotoS3 = request.getfixturevalue("moto_s3")
    return moto.settings()


# Parametrize a test with this to run it on both stores (the app_factory, client and actors fixtures follow).
BOTH_STORES = pytest.mark.parametrize("storage_kind", ["local", "s3"], indirect=True)


@pytest.fixture
def app_factory(
    db: Database, database_url: str, tmp_path: Path, storage_settings: dict[str, Any]
) -> Iterator[AppFactory]:
    """Start the backend on the test database with settings of the test's own (TestClient, lifespan run)."""
    clients: list[TestClient] = []

    def start(clock: Clock = utc_now, **overrides: Any) -> TestClient:
        settings = make_settings(database_url, tmp_path, **{**storage_settings, **overrides})
        client = TestClient(create_app(settings, services=build_services(settings, clock=clock)))
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(app_factory: AppFactory) -> TestClient:
    return app_factory()


class FakeClock:
    """An injectable clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


PASSWORD = "correct horse battery"


def services_of(client: TestClient) -> Services:
    services: Services = client.app.state.services  # type: ignore[attr-defined]
    return services


def add_user(client: TestClient, username: str, role: Role, password: str = PASSWORD) -> User:
    services = services_of(client)
    with services.db.sessions() as session:
        user = services.users.create(session, username, password, role, services.clock())
        session.commit()
        return user


def bearer(client: TestClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    response = client.post("/api/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['accessToken']}"}


@dataclass
class Actors:
    """An admin and an archivist with bearer tokens, on one running app."""

    client: TestClient
    admin: dict[str, str]
    archivist: dict[str, str]


@pytest.fixture
def actors(app_factory: AppFactory, clock: FakeClock) -> Actors:
    client = app_factory(clock=clock)
    add_user(client, "admin", Role.ADMIN)
    add_user(client, "erika", Role.ARCHIVIST)
    return Actors(client, bearer(client, "admin"), bearer(client, "erika"))


@pytest.fixture
def standin() -> Iterator[StandIn]:
    """The scripted stand-in OCR service on loopback, stopped when the test ends."""
    server = start_standin()
    yield server
    server.stop()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Real service processes a test starts (tests/support/processes.py), killed when it ends, however it ends."""
    running = Processes(tmp_path)
    try:
        yield running
    finally:
        running.kill_all()


@pytest.fixture
def start_app(
    database_url: str, tmp_path: Path, standin: StandIn, db: Database
) -> Iterator[Callable[..., TrainingApp]]:
    """Training-run tests: starts apps (with the follower) against the stand-in; all stopped at the end."""
    # Imported here: tests/backend/training_runs.py imports this module.
    from tests.backend.training_runs import training_app_factory

    yield from training_app_factory(database_url, tmp_path, standin)


@pytest.fixture
def app(start_app: Callable[..., TrainingApp]) -> TrainingApp:
    """Training-run tests: one app with the follower, on the stand-in."""
    return start_app()
