"""The backend as its own process for the backend benchmarks (bench_api, bench_ocr_start, bench_backend_overhead).

- :func:`bench_database`: a SQLite file in a temporary folder, or a PostgreSQL database of its
  own on 127.0.0.1:5432 (user postgres, database ``test`` to connect; ``BENCH_POSTGRES_URL``
  points elsewhere), dropped afterwards even when the benchmark fails;
- :func:`add_archivists`: users straight into the migrated database (one cheap Argon2 hash
  shared by all: logins are not what is measured);
- :func:`running_backend`: ``python -m backend`` on free loopback ports, as an operator starts
  it, until its management ``/health`` answers; stopped (SIGTERM, then SIGKILL) afterwards.
"""

from __future__ import annotations

import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.db import Database, migrate  # noqa: E402
from backend.users.models import Role, User  # noqa: E402
from tests.support.servers import wait_until_healthy  # noqa: E402

POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PASSWORD = "bench password 1"
# The cheapest Argon2 the settings allow, on both sides: a login is not what is measured.
CHEAP_ARGON2 = {"APP_ARGON2_TIME_COST": "1", "APP_ARGON2_MEMORY_KIB": "8192"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def bench_database(kind: str, folder: Path) -> Iterator[str]:
    """A database URL of this run's own: ``sqlite`` (a file in ``folder``) or ``postgresql``."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'backend.db'}"
        return
    if kind != "postgresql":
        raise ValueError(f"--database must be sqlite or postgresql, not {kind!r}")
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"bench_{os.getpid()}_{secrets.token_hex(4)}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def migrated(url: str) -> Database:
    database = Database(url)
    migrate(database.engine)
    return database


def add_archivists(database: Database, names: list[str]) -> None:
    hashed = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=8192),)).hash(PASSWORD)
    now = datetime.now(UTC)
    rows = [
        {"username": n, "password_hash": hashed, "role": Role.ARCHIVIST, "is_active": True, "created_at": now}
        for n in names
    ]
    with database.engine.begin() as connection:
        connection.execute(insert(User), rows)


@dataclass(frozen=True)
class Backend:
    url: str
    management_url: str
    process: subprocess.Popen[bytes]


@contextmanager
def running_backend(database_url: str, storage_dir: Path, **settings: str) -> Iterator[Backend]:
    """``python -m backend`` on free loopback ports with ``APP_*`` ``settings`` (names without the prefix)."""
    port, management_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "APP_DATABASE_URL": database_url,
        "APP_STORAGE_DIR": str(storage_dir),
        "APP_PORT": str(port),
        "APP_MANAGEMENT_PORT": str(management_port),
        "APP_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "APP_LOG_LEVEL": "WARNING",
        **CHEAP_ARGON2,
        **{f"APP_{name.upper()}": value for name, value in settings.items()},
    }
    process = subprocess.Popen([sys.executable, "-m", "backend"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    backend = Backend(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{management_port}", process)
    try:
        with httpx.Client(base_url=backend.management_url, timeout=10) as client:
            wait_until_healthy(client, 120)
        # /health answers from the management thread; the public server may bind a moment later.
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{backend.url}/api/documents", timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the backend did not start") from None
                time.sleep(0.2)
        yield backend
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def login(client: httpx.Client, username: str) -> None:
    """Log ``client`` in as ``username`` with a bearer token of its own."""
    response = client.post("/api/auth/token", data={"username": username, "password": PASSWORD})
    response.raise_for_status()
    client.headers["Authorization"] = f"Bearer {response.json()['accessToken']}"


async def alogin(client: httpx.AsyncClient, username: str) -> None:
    """Log ``client`` in as ``username`` with a bearer token of its own."""
    response = await client.post("/api/auth/token", data={"username": username, "password": PASSWORD})
    response.raise_for_status()
    client.headers["Authorization"] = f"Bearer {response.json()['accessToken']}"


def breaker_state(backend: Backend) -> str:
    """The OCR client's breaker state, read from the backend's /metrics (the one-hot gauge)."""
    metrics = httpx.get(f"{backend.management_url}/metrics", timeout=10).text
    for line in metrics.splitlines():
        if line.startswith("resilience4j_circuitbreaker_state{") and line.endswith(" 1.0"):
            return line.split('state="', 1)[1].split('"', 1)[0].upper()
    raise RuntimeError("the backend's /metrics has no breaker state")


def flush_rows(connection: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """Bulk-insert the rows gathered so far (one executemany) and start gathering again."""
    if rows:
        connection.execute(insert(table), rows)
        rows.clear()


def continue_sequences(connection: Any) -> None:
    """PostgreSQL: rows were inserted with explicit ids, so the id sequences must continue after them."""
    if connection.dialect.name != "postgresql":
        return
    for table in ("writers", "documents", "pages", "lines"):
        connection.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"))


def latency_summary(samples: list[float]) -> dict[str, float]:
    """Request count and p50/p95/p99/max in milliseconds of latencies given in seconds."""
    ordered = sorted(samples)

    def at(share: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(share * len(ordered)))], 1)

    return {
        "requests": len(ordered),
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "max_ms": round(1000 * ordered[-1], 1),
    }


def cpu_seconds(process: psutil.Process) -> float:
    """The user and system CPU seconds ``process`` and its live child processes (the backend's
    search workers, APP_SEARCH_PROCESSES) have used so far."""
    total = 0.0
    for member in [process, *process.children(recursive=True)]:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total
