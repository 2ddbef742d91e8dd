"""Where searches run: a few at a time in the backend's own process, or in worker processes.

A search is CPU work in Python between many short calls into the database driver, and the
driver lets go of Python's lock around each of them. Twenty searches in twenty threads of one
process therefore hand the lock back and forth at every row: measured in process on the
1 000 000-line SQLite archive, one thread did 160 searches a second, two 145, fourteen 80, each
search costing 2.5x the CPU. So searches queue for a slot (an asynchronous wait: no thread and
no pooled connection held meanwhile), and ``APP_SEARCH_PROCESSES`` worker processes, each with
its own lock and database connection, let a server use its other cores.

Workers only read, through their own connections: a line committed before a search starts is
found by it (SQLite's WAL and PostgreSQL both give a new transaction every earlier commit).

The searches held at once, running and waiting, are bounded (``APP_SEARCH_MAX_PENDING``): one
more is refused at once with 503 ``SEARCH_BUSY`` and a Retry-After, so a burst beyond what the
server answers costs those who came last a retry, not everyone a wait that only grows.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import random
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from backend.db import Database
from backend.errors import AppError, ErrorCode
from backend.search.schemas import SearchOut, SearchParams
from backend.search.service import SearchLimits, search
from backend.settings import Settings

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Searches of the backend's own process at once (see the module's docstring). PostgreSQL does
# about two thirds of a search in its own server process, outside Python's lock: while one
# search waits for it, another can run its Python (1M lines, in process: one at a time 53
# searches a second, two 77-92, four 79-89).
IN_PROCESS_SLOTS = {"sqlite": 1, "postgresql": 2}
# How often a worker checks that the backend that started it is still alive.
PARENT_CHECK_S = 1.0
# A refused search's Retry-After, seconds (drawn from the range): at a hundred or more searches
# a second, a queue of APP_SEARCH_MAX_PENDING is gone in about a second.
BUSY_RETRY_AFTER_S = (3, 8)
# Refusals are logged at most this often, with how many there were.
BUSY_LOG_EVERY_S = 10


class SearchWorkersFailedError(RuntimeError):
    """The worker processes could not start: the backend does not start without them."""


@dataclass(frozen=True)
class _Failed:
    """An ``AppError`` of a worker's search, sent back as plain values (exceptions pickle poorly)."""

    code: str
    message: str


class SearchRunner:
    """Runs ``backend.search.service.search`` for the routes; ``start`` once the database is migrated."""

    def __init__(
        self, db: Database, database_url: str, limits: SearchLimits, processes: int, max_pending: int = 100
    ) -> None:
        self._db = db
        self._url = database_url
        self._limits = limits
        self._processes = processes
        self._max_pending = max_pending
        # Searches running or waiting (APP_SEARCH_MAX_PENDING); counted under a lock, as the
        # search page and the API may call from more than one event loop's thread in tests.
        self._pending = 0
        self._pending_lock = threading.Lock()
        # Refused since their last log line (see _take_place).
        self._refused = 0
        self._refusals_logged = -float(BUSY_LOG_EVERY_S)
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        # Set by ``close``: a search that comes later (uvicorn lets none through, but a caller
        # holding the runner past the lifespan may) must not start workers that nothing stops.
        self._closed = False
        # Made on first use: anyio's limiter belongs to the running event loop.
        self._slots: anyio.CapacityLimiter | None = None

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> SearchRunner:
        return cls(
            db,
            settings.database_url,
            SearchLimits.from_settings(settings),
            settings.search_processes,
            settings.search_max_pending,
        )

    @property
    def processes(self) -> int:
        return self._processes

    def start(self) -> None:
        """Start the worker processes (none: searches run in this process)."""
        if self._processes:
            with self._pool_lock:
                self._closed = False
                self._pool = self._pool or self._new_pool()
                # Spawned now, not at the first search: a worker takes about a second to import.
                # (All at once: a pool that does not fork starts a worker only while none is idle.)
                try:
                    for started in [self._pool.submit(_ready) for _ in range(self._processes)]:
                        started.result()
                except BrokenProcessPool as exc:
                    raise SearchWorkersFailedError(
                        f"the {self._processes} search worker process(es) (APP_SEARCH_PROCESSES) did not start;"
                        " their log above says why"
                    ) from exc

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
            self._closed = True
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    @property
    def pending(self) -> int:
        """Searches running or waiting for their turn now."""
        return self._pending

    async def json(self, params: SearchParams) -> str:
        """The answer of ``GET /api/search`` as JSON."""
        return await self._admitted(self._json, params)

    async def result(self, params: SearchParams) -> SearchOut:
        """The answer as a model (the search page renders it)."""
        return await self._admitted(self._result, params)

    async def _json(self, params: SearchParams) -> str:
        if not self._processes:
            out = await self._here(params)
            return out.model_dump_json(by_alias=True)
        return await self._in_worker(params)

    async def _result(self, params: SearchParams) -> SearchOut:
        if not self._processes:
            return await self._here(params)
        return SearchOut.model_validate_json(await self._in_worker(params))

    async def _admitted(self, work: Callable[[SearchParams], Awaitable[_T]], params: SearchParams) -> _T:
        """``work`` in one of the APP_SEARCH_MAX_PENDING places, or 503 SEARCH_BUSY at once.

        The work runs in a task of its own that the caller's cancellation does not reach (a
        timeout around the call, a server shutting down): a search already in a thread or a
        worker runs on, and its place and slot are given back when it ends, not when its caller
        stops waiting — else a burst of abandoned searches would run past every bound.
        """
        self._take_place()
        try:
            task = asyncio.ensure_future(work(params))
        except BaseException:
            self._give_back_place()
            raise
        task.add_done_callback(self._work_ended)
        return await asyncio.shield(task)

    def _take_place(self) -> None:
        with self._pending_lock:
            if self._pending < self._max_pending:
                self._pending += 1
                return
            self._refused += 1
            now = time.monotonic()
            report = now - self._refusals_logged >= BUSY_LOG_EVERY_S
            if report:
                refused, self._refused, self._refusals_logged = self._refused, 0, now
        if report:
            # One line a while under a burst, not one a refusal.
            log.warning(
                "%d search(es) refused in the last %d s: %d running or waiting (APP_SEARCH_MAX_PENDING)",
                refused,
                BUSY_LOG_EVERY_S,
                self._max_pending,
            )
        raise AppError(
            ErrorCode.SEARCH_BUSY,
            "Many people are searching just now. Please try again in a few seconds.",
            # Spread: those refused together do not all come back at the same moment.
            headers={"Retry-After": str(random.randint(*BUSY_RETRY_AFTER_S))},  # noqa: S311 (jitter, no secret)
        )

    def _give_back_place(self) -> None:
        with self._pending_lock:
            self._pending -= 1

    def _work_ended(self, task: asyncio.Future[Any]) -> None:
        self._give_back_place()
        if not task.cancelled():
            # Read, so that the failure of work whose caller left is not reported as never retrieved
            # (the caller that stayed gets it through the shield).
            task.exception()

    async def _here(self, params: SearchParams) -> SearchOut:
        if self._slots is None:
            self._slots = anyio.CapacityLimiter(IN_PROCESS_SLOTS[self._db.engine.dialect.name])
        return await anyio.to_thread.run_sync(self._search_here, params, limiter=self._slots)

    def _search_here(self, params: SearchParams) -> SearchOut:
        with self._db.sessions() as session:
            return search(session, params, self._limits)

    async def _in_worker(self, params: SearchParams) -> str:
        # A worker that died (the kernel's OOM killer, a signal) breaks the whole pool: it is
        # replaced, and the search tried once more in the new one.
        for attempt in (1, 2):
            pool = self._current_pool()
            if pool is None:
                break
            try:
                answer = await asyncio.wrap_future(pool.submit(_search_in_worker, params))
            except BrokenProcessPool:
                log.exception("a search worker process died (attempt %d of 2); starting new ones", attempt)
                self._replace(pool)
                continue
            if isinstance(answer, _Failed):
                raise AppError(ErrorCode(answer.code), answer.message)
            return answer
        raise AppError(
            ErrorCode.SEARCH_UNAVAILABLE,
            "The search is not available just now. Please try again in a minute.",
            headers={"Retry-After": "30"},
        )

    def _current_pool(self) -> ProcessPoolExecutor | None:
        """The pool to search in (a new one where the last broke); None once closed."""
        with self._pool_lock:
            if self._closed:
                return None
            if self._pool is None:
                self._pool = self._new_pool()
            return self._pool

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._pool_lock:
            if self._pool is broken:
                self._pool = None
        broken.shutdown(wait=False, cancel_futures=True)

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the backend's threads (thread pool, runner, management server) and its
        # pooled connections must not be copied into the children.
        return ProcessPoolExecutor(
            max_workers=self._processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self._url, self._limits, os.getpid()),
        )


# --- in the worker processes -------------------------------------------------------------------

_worker: tuple[Database, SearchLimits] | None = None


def _start_worker(url: str, limits: SearchLimits, parent: int) -> None:
    global _worker
    # Ctrl-C reaches the whole process group: the backend stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker = (Database(url), limits)
    threading.Thread(target=_exit_with, args=(parent,), name="parent-watch", daemon=True).start()
    # As in ``python -m backend``: what lives as long as the process is not walked by every collection.
    gc.collect()
    gc.freeze()


def _exit_with(parent: int) -> None:
    """End this worker when the backend is gone (killed: it could not stop its workers itself)."""
    stop = threading.Event()
    while not stop.wait(PARENT_CHECK_S):
        if os.getppid() != parent:
            os._exit(0)


def _ready() -> bool:
    return _worker is not None


def _search_in_worker(params: SearchParams) -> str | _Failed:
    assert _worker is not None, "the initializer sets up every worker"
    db, limits = _worker
    try:
        with db.sessions() as session:
            return search(session, params, limits).model_dump_json(by_alias=True)
    except AppError as error:
        return _Failed(error.code.value, error.message)
