"""Real service processes on loopback for end-to-end tests and benchmarks: the OCR service and the backend.

Each process runs in a session of its own (so SIGKILL takes its children, the OCR workers,
too), with its output in a log file the failure message quotes. Every wait is a poll on a
condition with a generous guard, never a fixed sleep.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
GUARD_S = 900.0  # only a guard against a hung test; never reached when the code works
POLL_S = 0.1
ADMIN, PASSWORD = "admin", "fault-test-password"
DPI = 150


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], Any],
    what: str,
    processes: tuple[Process, ...] = (),
    guard_s: float = GUARD_S,
    poll_s: float = POLL_S,
) -> Any:
    """Poll every ``poll_s`` until ``condition()`` is truthy (and return it); fail with ``what`` at the guard."""
    deadline = time.monotonic() + guard_s
    while True:
        result = condition()
        if result:
            return result
        for process in processes:
            assert process.alive(), f"{process.name} died while waiting for {what}:\n{process.log_tail()}"
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(poll_s)


@dataclass
class Process:
    """A service started in a session of its own, so SIGKILL takes its children (the OCR workers) too."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=60)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@dataclass
class Processes:
    tmp: Path
    started: list[Process] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Process:
        log = self.tmp / f"{name}-{len(self.started)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, *argv],
                env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = Process(name, popen, log)
        self.started.append(process)
        return process

    def kill_all(self) -> None:
        for process in self.started:
            process.kill()


def answers(url: str, status: int) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == status
    except httpx.TransportError:
        return False


def healthy(url: str) -> bool:
    return answers(url, 200)


@dataclass
class OcrService:
    """The OCR service as a process: ``model`` installed as ``model_name`` and made the default."""

    processes: Processes
    folder: Path
    model: Path
    model_name: str = "tiny"
    port: int = field(default_factory=free_port)
    # Its own, so that two services (replicas, or another test run on the machine) never share one.
    management_port: int = field(default_factory=free_port)
    running: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def process(self) -> Process:
        assert self.running is not None, "not started"
        return self.running

    def start_process(self, module: str = "ocr_service", **extra_env: str) -> OcrService:
        """A fresh service process on the same port and model store."""
        models = self.folder / "models"
        if not models.exists():
            models.mkdir(parents=True)
            shutil.copyfile(self.model, models / f"{self.model_name}{self.model.suffix}")
        env = {
            "OCR_PORT": str(self.port),
            "OCR_MANAGEMENT_PORT": str(self.management_port),
            "OCR_MODELS_DIR": str(models),
            "OCR_TRAINING_DIR": str(self.folder / "training"),
            "OCR_DEFAULT_MODEL": self.model_name,
            "OCR_WORKERS": "2",
            "OCR_MEMORY_LIMIT_MB": "16384",
            "OCR_MAX_PAGE_PIXELS": "4000000",
            "OCR_MAX_SEGMENTATION_WIDTH": "1800",
            "OCR_PDF_DPI": str(DPI),
            **extra_env,
        }
        self.running = self.processes.start("ocr-service", ["-m", module], env)
        wait_for(lambda: healthy(self.url + "/health"), "the OCR service is healthy", (self.process,))
        return self


@dataclass
class Backend:
    """``python -m backend`` as a process, configured by ``env`` (see :func:`backend_env`)."""

    processes: Processes
    env: dict[str, str]
    running: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['APP_PORT']}"

    @property
    def process(self) -> Process:
        assert self.running is not None, "not started"
        return self.running

    def start(self) -> Backend:
        self.running = self.processes.start("backend", ["-m", "backend"], self.env)
        health = f"http://127.0.0.1:{self.env['APP_MANAGEMENT_PORT']}/health"
        wait_for(lambda: healthy(health), "the backend is healthy", (self.process,))
        # The management port opens first; the API's answer (401 without a token) says it is up too.
        wait_for(lambda: answers(f"{self.url}/api/documents", 401), "the backend's API answers", (self.process,))
        return self

    def client(self, timeout: float = 60) -> httpx.Client:
        """A client logged in as the admin the backend created at its first start."""
        token = httpx.post(f"{self.url}/api/auth/token", data={"username": ADMIN, "password": PASSWORD}, timeout=60)
        assert token.status_code == 200, token.text
        headers = {"Authorization": f"Bearer {token.json()['accessToken']}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)


def backend_env(tmp: Path, database_url: str, ocr_url: str, **overrides: str) -> dict[str, str]:
    """A backend on free loopback ports with its storage under ``tmp``, reading with the OCR service at ``ocr_url``."""
    port = free_port()
    env = {
        "APP_PORT": str(port),
        "APP_MANAGEMENT_PORT": str(free_port()),
        "APP_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "APP_DATABASE_URL": database_url,
        "APP_STORAGE_DIR": str(tmp / "storage"),
        "APP_ADMIN_USERNAME": ADMIN,
        "APP_ADMIN_PASSWORD": PASSWORD,
        "APP_ARGON2_TIME_COST": "1",
        "APP_ARGON2_MEMORY_KIB": "8192",
        "APP_OCR_URLS": ocr_url,
        "APP_OCR_JOBS_CONCURRENCY": "1",
        "APP_OCR_POLL_S": str(POLL_S),
        "APP_OCR_BACKOFF_S": "0.05",
        "APP_OCR_BREAKER_OPEN_S": "1",
        "APP_OCR_PDF_DPI": str(DPI),
        "APP_OCR_MAX_PAGE_PIXELS": "4000000",
    }
    env.update(overrides)
    return env
