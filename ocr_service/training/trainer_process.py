"""One trainer process: started in its own session, watched until it exits, stalls or is cancelled."""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ocr_service.training.progress import ProgressReader
from ocr_service.training.watchdog import Watchdog

KILL_WAIT_S = 30.0


class Ending(enum.Enum):
    EXITED = "exited"
    STALLED = "stalled"
    CANCELLED = "cancelled"


def start_trainer(command: list[str], job_dir: Path, log_file: Any, threads: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    # Its own session: the trainer and anything it starts are killed together (killpg).
    return subprocess.Popen(
        command,
        cwd=job_dir,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def watch_trainer(
    process: subprocess.Popen[bytes],
    reader: ProgressReader,
    watchdog: Watchdog,
    cancel: threading.Event,
    on_events: Callable[[list[dict[str, Any]]], None],
    poll_s: float,
) -> Ending:
    """Feed the trainer's progress to ``on_events`` until it ends; a trainer that stops
    reporting for longer than the watchdog allows, or is cancelled, is killed."""
    while True:
        events = reader.read()
        on_events(events)
        if events:
            watchdog.beat()
        if cancel.is_set():
            kill_group(process)
            return Ending.CANCELLED
        if process.poll() is not None:
            break
        if watchdog.stalled():
            kill_group(process)
            on_events(reader.read())
            return Ending.STALLED
        time.sleep(poll_s)
    on_events(reader.read())
    return Ending.CANCELLED if cancel.is_set() else Ending.EXITED


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the trainer and everything it started; its work is discarded, so no grace period."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=KILL_WAIT_S)


def kill_orphan(pid: int, job_dir: Path) -> bool:
    """Kill a trainer a previous service process left running. The trainer runs in its own
    session, so it can outlive a crashed service; only a process whose command line names
    this job's folder is ours to kill."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\x00")
    except OSError:
        return False
    if str(job_dir).encode() not in cmdline:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    return True
