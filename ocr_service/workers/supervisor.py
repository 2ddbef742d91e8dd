"""The service's side of its worker processes: one page per worker at a time, each worker on its
own pipe, a dead worker noticed by its process sentinel and replaced alone.

Not ``ProcessPoolExecutor``: when one of its workers dies it declares the whole pool broken and
fails every page in it, of every document. Here only the page that was on the dead worker is
affected, and it is given a second chance on another worker (``pages.lost_page_error``).

One thread (``ocr-workers``) owns the processes and pipes; other threads only queue pages,
abandon them, or ask it to stop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from ocr_service.scratch import ScratchFolder
from ocr_service.workers.handle import UNSENDABLE, State, WorkerHandle
from ocr_service.workers.messages import (
    PageDone,
    PageFailedError,
    PageTask,
    PageTimeLimit,
    PoolClosedError,
    Ready,
    StartFailed,
    WorkerInfo,
    WorkerSpec,
)
from ocr_service.workers.pages import PageJob, PageQueue, lost_page_error

log = logging.getLogger(__name__)


class WorkerStartError(RuntimeError):
    """A worker could not load its models when the pool started."""


class Supervisor:
    def __init__(
        self,
        workers: int,
        share: int,
        cores: int,
        spec: Callable[[], WorkerSpec],
        page_timeout_s: float,
        kill_grace_s: float,
    ) -> None:
        """``share``: threads that are always a worker's own; ``cores``: all threads the workers
        may use together. ``spec()`` is asked at every start, so a replacement loads the
        segmentation model configured at that time."""
        self._workers = [WorkerHandle(i) for i in range(workers)]
        self._share = share
        self._cores = max(cores, share)
        self._spec = spec
        self._page_timeout_s = page_timeout_s
        self._kill_grace_s = kill_grace_s
        self._queue = PageQueue()
        self._started = threading.Condition()
        self._start_error: str | None = None
        self._starting = True
        self._closing = False
        self._closed = False
        self._info: list[WorkerInfo] = []
        self._task_ids = 0
        # Made at start: an app that is built but never started holds no descriptors or folders.
        self._wake_r = self._wake_w = -1
        self._reports = ""
        self._scratch: ScratchFolder | None = None
        self._thread = threading.Thread(target=self._run, name="ocr-workers", daemon=True)

    # --- called from other threads ------------------------------------------------------------

    def start(self) -> list[WorkerInfo]:
        """Start every worker and block until each has loaded its models."""
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        # Locked while this process lives: a service killed with its folder is swept at start-up.
        self._scratch = ScratchFolder.create("page-reports")
        self._reports = str(self._scratch.path)
        for worker in self._workers:
            self._spawn(worker)
        self._thread.start()
        with self._started:
            self._started.wait_for(lambda: self._closing or self._start_error is not None or self._queue.accepting)
            if self._start_error is not None:
                raise WorkerStartError(self._start_error)  # no worker is started again
            self._starting = False
            return list(self._info)

    @property
    def serving(self) -> bool:
        """Whether pages are taken: started, not closing, and some worker is up or starting."""
        return self._queue.accepting and not self._closing

    @property
    def info(self) -> list[WorkerInfo]:
        return list(self._info)

    @property
    def pages_queued(self) -> int:
        return len(self._queue)

    def submit(self, job: PageJob) -> None:
        self._queue.put(job)
        self._wake()

    def abandon(self, job: PageJob) -> None:
        self._queue.abandon(job)

    def close(self) -> None:
        with self._started:
            if self._closed:
                return
            self._closed = self._closing = True
            self._started.notify_all()
        self._wake()
        if self._thread.is_alive():
            self._thread.join()
        else:
            self._stop_all()
        if self._reports:
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._wake_r = self._wake_w = -1
            if self._scratch is not None:
                self._scratch.remove()

    def _wake(self) -> None:
        # A full pipe already wakes the thread; a closed one means it has stopped.
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b".")

    # --- the supervisor's thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._closing:
                self._restart_due()
                self._dispatch()
                self._wait_and_handle()
                self._end_overdue_pages()
        except Exception:
            # A bug here would leave every page waiting forever: fail them, loudly, and refuse
            # new ones (the service's health turns 503) instead.
            log.exception("the OCR worker supervisor failed; no more pages are read")
            self._closing = True
        finally:
            self._stop_all()

    def _wait_and_handle(self) -> None:
        conns: dict[Connection, WorkerHandle] = {}
        sentinels: dict[int, tuple[WorkerHandle, BaseProcess]] = {}
        for worker in self._workers:
            if worker.conn is not None and worker.process is not None:
                conns[worker.conn] = worker
                sentinels[worker.process.sentinel] = (worker, worker.process)
        ready = wait([*conns, *sentinels, self._wake_r], timeout=self._next_timer())
        if self._wake_r in ready:
            os.read(self._wake_r, 4096)
        # Messages first: a worker that answered and then died has still read its page. A worker
        # replaced meanwhile is skipped by identity: its successor may have the same fd numbers.
        for conn, worker in conns.items():
            if conn in ready and worker.conn is conn:
                self._receive(worker)
        for sentinel, (worker, process) in sentinels.items():
            if sentinel in ready and worker.process is process:
                self._died(worker)

    def _next_timer(self) -> float | None:
        due = min(
            [w.restart_at for w in self._workers if w.state is State.DOWN]
            + [w.deadline for w in self._workers if w.state is State.BUSY],
            default=math.inf,
        )
        return None if due == math.inf else max(0.0, due - time.monotonic())

    def _receive(self, worker: WorkerHandle) -> None:
        assert worker.conn is not None
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            self._died(worker)
            return
        self._handle(worker, message)

    def _handle(self, worker: WorkerHandle, message: Any) -> None:
        if isinstance(message, Ready):
            worker.ready(message.info)
            self._publish()
        elif isinstance(message, StartFailed):
            self._died(worker, reason=message.reason)
        elif isinstance(message, PageDone) and worker.task is not None and worker.task.task_id == message.task_id:
            job = worker.job
            worker.page_done()
            if job is not None:
                self._deliver(job, message.result, message.error)

    def _died(self, worker: WorkerHandle, reason: str | None = None, overdue: bool = False) -> None:
        if worker.process is None:
            return
        # A page finished just before its worker died is still delivered.
        while reason is None and worker.conn is not None and _poll(worker.conn):
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                break
            self._handle(worker, message)
            if worker.process is None:
                return  # the message was the worker's own report that it could not start
        state, job, task, pid = worker.state, worker.job, worker.task, worker.process.pid
        exitcode = worker.reap()
        if state is State.STARTING:
            self._start_failed(worker, reason or f"the process ended with exit code {exitcode}")
        elif state is State.BUSY and job is not None and task is not None:
            error = lost_page_error(job, task, pid, exitcode, overdue)
            if error is None:
                self._queue.put_back(job)
            else:
                self._deliver(job, None, error)
            self._spawn(worker)
        else:
            log.error("OCR worker %s ended while idle (exit code %s); starting a new one", pid, exitcode)
            self._spawn(worker)
        self._publish()

    def _start_failed(self, worker: WorkerHandle, reason: str) -> None:
        log.error("an OCR worker could not start: %s", reason)
        worker.start_failed(time.monotonic())
        with self._started:
            if self._starting:
                worker.restart_at = math.inf  # start() gives up: the service reports why
                self._start_error = reason
                self._started.notify_all()

    def _restart_due(self) -> None:
        now = time.monotonic()
        for worker in self._workers:
            if worker.state is State.DOWN and worker.restart_at <= now:
                self._spawn(worker)
        self._publish()

    def _spawn(self, worker: WorkerHandle) -> None:
        try:
            worker.spawn(self._spec())
        except OSError as exc:  # no memory or process slots left for a new process
            self._start_failed(worker, f"the process could not be started: {exc}")

    def _dispatch(self) -> None:
        idle = [w for w in self._workers if w.state is State.IDLE]
        while idle:
            job, waiting = self._queue.take()
            if job is None:
                return
            worker = idle.pop(0)
            held = [w.threads for w in self._workers if w.state is State.BUSY]
            self._send(worker, job, threads_for(self._share, self._cores, held, min(len(idle), waiting)))

    def _send(self, worker: WorkerHandle, job: PageJob, threads: int) -> None:
        self._task_ids += 1
        limit = None
        if self._page_timeout_s > 0:
            report = os.path.join(self._reports, f"{self._task_ids}.stacks")
            limit = PageTimeLimit(self._page_timeout_s, report)
        task = PageTask(self._task_ids, job.image, job.model, job.segmentation_model, threads, limit)
        try:
            worker.send(task)
        except UNSENDABLE as exc:
            log.exception("a page could not be handed to an OCR worker")
            self._deliver(job, None, PageFailedError(f"the page could not be handed to a worker: {exc}"))
            return
        except OSError:
            # The worker was already gone: not the page's doing, so it keeps its place in line.
            self._queue.put_back(job)
            self._died(worker)
            return
        worker.took(job, task, time.monotonic() + limit.seconds + self._kill_grace_s if limit else math.inf)

    def _end_overdue_pages(self) -> None:
        now = time.monotonic()
        for worker in self._workers:
            if worker.state is State.BUSY and worker.deadline <= now and worker.process is not None:
                # Its watchdog should have ended it already; it is stuck where that cannot act.
                worker.process.kill()
                self._died(worker, overdue=True)

    def _deliver(self, job: PageJob, result: Any, error: BaseException | None) -> None:
        """The page's end in the pool: its outcome to its reader (unless abandoned), and the
        pool's hold on its image let go. Called once per page, when no worker holds it."""
        if not job.abandoned:
            job.deliver(result, error)
        job.let_go()

    def _publish(self) -> None:
        """Share the workers' state with other threads; fail waiting pages when none can read them."""
        with self._started:
            self._info = [w.info for w in self._workers if w.info is not None]
            if self._starting:
                serving = all(w.state is State.IDLE for w in self._workers)
            else:
                serving = any(w.state is not State.DOWN for w in self._workers)
            orphaned = self._queue.set_accepting(serving) if serving != self._queue.accepting else []
            self._started.notify_all()
        for job in orphaned:
            self._deliver(job, None, PoolClosedError("none of the OCR workers can start"))

    def _stop_all(self) -> None:
        queued = self._queue.set_accepting(False)
        running = [w.job for w in self._workers if w.job is not None]
        for worker in self._workers:
            worker.stop()
        for job in [*queued, *running]:
            self._deliver(job, None, PoolClosedError("the OCR service is shutting down"))


def threads_for(share: int, cores: int, held: list[int], also_starting: int = 0) -> int:
    """Threads for a page that starts now: its worker's share, plus the cores that no running
    page holds and no page starting beside it needs. A running page keeps what it was given
    (torch cannot change it mid-page), so lent threads come back only as pages end; counting
    what running pages hold (not their shares) keeps the lending from stacking up."""
    return max(share, cores - sum(held) - also_starting * share)


def _poll(conn: Connection) -> bool:
    try:
        return conn.poll()
    except (EOFError, OSError):
        return False
