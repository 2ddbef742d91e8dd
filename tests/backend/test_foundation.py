"""Start-up, errors, database set-up and the management port."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from sqlalchemy import text

from backend.app import create_management_app
from backend.db import Database
from backend.deps import build_services
from backend.metrics import Metrics, RequestLatency
from tests.backend.conftest import DATABASE_KIND, AppFactory, make_settings

ROOT = Path(__file__).resolve().parents[2]


def _probe_app(client: TestClient) -> FastAPI:
    app = client.app
    assert isinstance(app, FastAPI)

    @app.get("/probe/{number}")
    def probe(number: int) -> dict[str, int]:
        return {"number": number}

    @app.get("/broken")
    def broken() -> None:
        raise RuntimeError("secret internal detail")

    return app


def test_invalid_input_is_a_422_with_a_code_and_the_field(client: TestClient) -> None:
    _probe_app(client)
    response = client.get("/probe/not-a-number")
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "INVALID_REQUEST"
    assert body["details"]["problems"][0]["field"] == "path.number"


def test_unknown_address_and_method_have_codes(client: TestClient) -> None:
    _probe_app(client)
    assert client.get("/nowhere").json()["code"] == "NOT_FOUND"
    response = client.post("/probe/1")
    assert (response.status_code, response.json()["code"]) == (405, "METHOD_NOT_ALLOWED")


def test_a_bug_is_a_500_with_a_code_and_no_stack_trace(
    app_factory: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = app_factory()
    client = TestClient(client.app, raise_server_exceptions=False)
    _probe_app(client)
    response = client.get("/broken")
    assert response.status_code == 500
    assert response.json() == {"code": "INTERNAL_ERROR", "message": "Something went wrong inside the backend."}
    assert "secret internal detail" in caplog.text  # the traceback goes to the log, not to the client


@pytest.mark.skipif(DATABASE_KIND != "sqlite", reason="SQLite's own connection settings")
def test_sqlite_connections_use_wal_and_enforce_foreign_keys(db: Database) -> None:
    with db.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_migrations_run_at_start_from_an_empty_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'backend.db'}"
    with TestClient(__import__("backend.app").app.create_app(make_settings(url, tmp_path))):
        pass
    database = Database(url)
    with database.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    database.dispose()


def test_health_and_metrics_are_on_the_management_app_only(client: TestClient, db: Database) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    management = TestClient(create_management_app(services))
    assert management.get("/health").json() == {"status": "ok"}
    client.get("/nowhere")
    metrics = management.get("/metrics")
    assert metrics.status_code == 200
    assert "http_server_request_duration_seconds" in metrics.text
    client.get("/api/documents/12345")
    text = management.get("/metrics").text
    assert 'route="/api/documents/{document_id}"' in text and "12345" not in text
    assert client.get("/health").status_code == 404
    assert client.get("/metrics").status_code == 404


def test_request_latency_is_timed_to_the_response_start_by_route_template_and_status() -> None:
    metrics = Metrics()
    app = FastAPI()
    app.add_middleware(RequestLatency, metrics=metrics)
    labels = {"method": "GET", "route": "/streams/{number}", "status": "206"}
    observed_mid_stream: list[float | None] = []

    def count() -> float | None:
        return metrics.registry.get_sample_value("http_server_request_duration_seconds_count", labels)

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"first "
        # An event stream counts the time to its first byte, not how long the client stayed:
        # the request is timed while its body still streams (waited for, not raced with a
        # sleep: a loaded suite once stalled this process half a second before the start).
        for _ in range(1000):
            if count():
                break
            await asyncio.sleep(0.01)
        observed_mid_stream.append(count())
        yield b"last"

    @app.get("/streams/{number}")
    async def stream(number: int) -> StreamingResponse:
        return StreamingResponse(slow_body(), status_code=206)

    with TestClient(app) as client:
        assert client.get("/streams/7").content == b"first last"
    assert observed_mid_stream == [1]
    assert count() == 1


def test_health_is_503_with_a_code_when_the_database_is_gone(tmp_path: Path) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}", tmp_path)
    services = build_services(settings)
    (tmp_path / "missing-dir").rmdir()
    response = TestClient(create_management_app(services)).get("/health")
    assert (response.status_code, response.json()["code"]) == (503, "DATABASE_UNAVAILABLE")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"APP_PORT": "eighty"}, "port"),
        ({"APP_ADMIN_USERNAME": "root"}, "APP_ADMIN_PASSWORD"),
        ({"APP_DATABASE_URL": "mysql://x"}, "database_url"),
        ({"APP_MANAGEMENT_PORT": "8000"}, "APP_MANAGEMENT_PORT"),
        ({"APP_TRASH_DAYS": "0"}, "trash_days"),
        ({"APP_OCR_URLS": " , "}, "APP_OCR_URLS"),
        ({"APP_OCR_URLS": "http://127.0.0.1:8001,ftp://ocr"}, "APP_OCR_URLS"),
        ({"APP_OCR_JOBS_CONCURRENCY": "-1"}, "ocr_jobs_concurrency"),
        ({"APP_OCR_LEASE_S": "0"}, "ocr_lease_s"),
        ({"APP_ADMIN_USERNAME": "root", "APP_ADMIN_PASSWORD": "short"}, "APP_ADMIN_PASSWORD"),
        ({"APP_ADMIN_USERNAME": "no spaces allowed", "APP_ADMIN_PASSWORD": "long enough pw"}, "APP_ADMIN_USERNAME"),
    ],
)
def test_a_bad_setting_stops_start_up_with_its_name(env: dict[str, str], named: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "backend"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert named in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(url: str, deadline_s: float = 60) -> httpx.Response:
    end = time.monotonic() + deadline_s
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def test_python_m_backend_serves_api_and_management_on_their_ports(
    database_url: str, tmp_path: Path, db: Database
) -> None:
    port, management_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "APP_PORT": str(port),
        "APP_MANAGEMENT_PORT": str(management_port),
        "APP_DATABASE_URL": database_url,
        "APP_STORAGE_DIR": str(tmp_path / "storage"),
        "APP_ARGON2_TIME_COST": "1",
        "APP_ARGON2_MEMORY_KIB": "8192",
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "backend"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert _wait_for(f"http://127.0.0.1:{management_port}/health").json() == {"status": "ok"}
        assert _wait_for(f"http://127.0.0.1:{port}/metrics").status_code == 404
        assert httpx.get(f"http://127.0.0.1:{management_port}/metrics").status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output


def test_the_migrations_build_exactly_the_tables_the_models_describe(db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from backend.db import Base
    from backend.search.models import not_engine_owned

    with db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": not_engine_owned}
        )
        assert compare_metadata(context, Base.metadata) == []


@pytest.mark.parametrize(
    "value",
    [{"baseline": [[1, 2], [3, 4]]}, ["ä€😀", 1e300, 10**20, None, True], ["lone \ud800 surrogate"], 0.1],
)
def test_json_columns_are_read_as_the_standard_library_reads_them(value: object) -> None:
    from backend.db import read_json

    stored = json.dumps(value)  # what SQLAlchemy writes
    assert read_json(stored) == json.loads(stored) == value
    assert read_json(stored.encode()) == value
