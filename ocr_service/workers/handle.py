"""One worker process as the service sees it: its process, its pipe, and the page it is reading."""

from __future__ import annotations

import enum
import logging
import math
import multiprocessing
import pickle
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler

from ocr_service.workers.messages import PageTask, WorkerInfo, WorkerSpec
from ocr_service.workers.pages import PageJob
from ocr_service.workers.process import serve

log = logging.getLogger(__name__)

# spawn, never fork: forking a process that has started threads (uvicorn, torch) deadlocks.
_SPAWN = multiprocessing.get_context("spawn")
# How long a worker that was asked to stop may take before it is killed.
_STOP_GRACE_S = 5.0
# After a worker could not start, the next try waits this long, doubling up to the cap.
_RESTART_BACKOFF_S = (0.5, 30.0)
# What pickling a page may raise for a value that cannot cross to a worker.
UNSENDABLE = (pickle.PicklingError, TypeError, AttributeError, ValueError)


class State(enum.Enum):
    STARTING = "starting"  # loading its models
    IDLE = "idle"
    BUSY = "busy"
    DOWN = "down"  # no process: its last start failed, a new one starts at ``restart_at``


@dataclass(eq=False)
class WorkerHandle:
    index: int
    state: State = State.DOWN
    process: BaseProcess | None = None
    conn: Connection | None = None
    info: WorkerInfo | None = None
    job: PageJob | None = None
    task: PageTask | None = None
    # Threads the page on this worker may use (its own share plus any lent by idle workers).
    threads: int = 0
    # When the service ends the page itself, should its worker's own watchdog not have.
    deadline: float = math.inf
    restart_at: float = math.inf
    start_failures: int = 0

    def spawn(self, spec: WorkerSpec) -> None:
        parent, child = _SPAWN.Pipe(duplex=True)
        process = _SPAWN.Process(target=serve, args=(child, spec), name=f"ocr-worker-{self.index}", daemon=True)
        try:
            process.start()
        except OSError:
            parent.close()
            raise
        finally:
            child.close()  # the worker holds its end; ours would keep the pipe open after it died
        self.process, self.conn, self.state, self.info = process, parent, State.STARTING, None
        self.restart_at = math.inf

    def start_failed(self, now: float) -> None:
        """Its process could not start: the next try waits, longer after each failure in a row."""
        self.start_failures += 1
        first, cap = _RESTART_BACKOFF_S
        self.restart_at = now + min(cap, first * 2 ** (self.start_failures - 1))

    def ready(self, info: WorkerInfo) -> None:
        self.state, self.info, self.start_failures = State.IDLE, info, 0

    def took(self, job: PageJob, task: PageTask, deadline: float) -> None:
        self.state, self.job, self.task, self.threads, self.deadline = State.BUSY, job, task, task.threads, deadline

    def page_done(self) -> None:
        self.state, self.job, self.task, self.threads, self.deadline = State.IDLE, None, None, 0, math.inf

    def send(self, task: PageTask) -> None:
        """Hand ``task`` to the worker. Raises one of ``UNSENDABLE`` if the page cannot be pickled
        (nothing was sent), ``OSError`` if the worker is gone."""
        assert self.conn is not None
        payload = ForkingPickler.dumps(task)
        self.conn.send_bytes(payload)

    def reap(self) -> int | None:
        """Wait for a worker that ended (or is ending) and release its pipe; its exit code."""
        process, conn = self.process, self.conn
        assert process is not None and conn is not None
        process.join(_STOP_GRACE_S)
        if process.is_alive():
            process.kill()
            process.join()
        exitcode = process.exitcode
        conn.close()
        process.close()
        self._forget()
        return exitcode

    def stop(self) -> None:
        """End the worker: an idle one leaves when its pipe closes, any other is terminated."""
        if self.process is None:
            return
        assert self.conn is not None
        if self.state is not State.IDLE:
            self.process.terminate()
        self.conn.close()
        self.process.join(_STOP_GRACE_S)
        if self.process.is_alive():
            log.warning("OCR worker %s did not stop within %g s; killing it", self.process.pid, _STOP_GRACE_S)
            self.process.kill()
            self.process.join()
        self.process.close()
        self._forget()

    def _forget(self) -> None:
        self.process, self.conn, self.info, self.job, self.task = None, None, None, None, None
        self.state, self.threads, self.deadline = State.DOWN, 0, math.inf
