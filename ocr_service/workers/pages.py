"""Pages on their way to a worker: the queue they wait in, and what becomes of a page whose
worker died under it."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ocr_service.workers.messages import PageKilledWorkerError, PageTask, PageTimedOutError, PoolClosedError

log = logging.getLogger(__name__)

# A page is tried on at most this many workers that die under it; then it is the page's fault.
MAX_KILLS = 2


def _nothing() -> None:
    pass


@dataclass(eq=False)
class PageJob:
    """One page waiting for, or on, a worker; ``deliver(result, error)`` is called once, from the
    supervisor's thread, unless the page was abandoned first.

    ``let_go()`` is called exactly once, from whichever thread drops the pool's last hold on the
    page (its image): after it was delivered, when it was abandoned while still queued, or, for
    a page abandoned on a worker, once that worker has finished it or died. Until then the image
    is in this process (the job and the task sent to the worker hold it), so its memory is too.
    """

    image: Any
    model: Any
    segmentation_model: Any
    deliver: Callable[[Any, BaseException | None], None]
    let_go: Callable[[], None] = _nothing
    # How many times a worker died while it read this page.
    kills: int = 0
    abandoned: bool = False


class PageQueue:
    """Pages in order of arrival, shared by the threads that add them and the supervisor that
    hands them to workers. Closed, it refuses pages (no worker could read them)."""

    def __init__(self) -> None:
        self._jobs: deque[PageJob] = deque()
        self._lock = threading.Lock()
        self.accepting = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def put(self, job: PageJob) -> None:
        with self._lock:
            if not self.accepting:
                raise PoolClosedError("the OCR workers are not running")
            self._jobs.append(job)

    def put_back(self, job: PageJob) -> None:
        """First in line again: a page that lost its worker has waited its turn already. One
        abandoned meanwhile is dropped instead (and let go)."""
        with self._lock:
            if not job.abandoned:
                self._jobs.appendleft(job)
                return
        job.let_go()

    def take(self) -> tuple[PageJob | None, int]:
        """The next page, and how many still wait after it."""
        with self._lock:
            job = self._jobs.popleft() if self._jobs else None
            return job, len(self._jobs)

    def abandon(self, job: PageJob) -> None:
        """The page's reader is gone: a page still queued never starts (and is let go now), a
        running one is dropped when its worker is done with it (and let go then)."""
        with self._lock:
            job.abandoned = True
            try:
                self._jobs.remove(job)
            except ValueError:
                return  # on a worker, or on its way to one: the supervisor lets it go
        job.let_go()

    def set_accepting(self, accepting: bool) -> list[PageJob]:
        """Open or close the queue; closing it returns the pages that were waiting."""
        with self._lock:
            self.accepting = accepting
            if accepting:
                return []
            waiting, self._jobs = list(self._jobs), deque()
            return waiting


def lost_page_error(
    job: PageJob, task: PageTask, pid: int | None, exitcode: int | None, overdue: bool
) -> Exception | None:
    """What the page on a worker that died gets: an error, or None to be tried again.

    No second try for a hang: its own watchdog's report names this page (or the service ended
    it, ``overdue``), and a retry would hold another worker for the whole limit again. A kill is
    less certain (the kernel's OOM killer may pick a worker whose page is not the cause), so it
    gets one more try; a page that ends a second worker is the document's fault.
    """
    limit = task.limit
    stacks = take_report(limit.report) if limit is not None else ""
    if limit is not None and (overdue or stacks.startswith("Timeout")):
        log.error(
            "a page took longer than %g s; OCR worker %s was ended. Where it hung:\n%s",
            limit.seconds,
            pid,
            stacks or "(its watchdog did not fire; the service killed it)",
        )
        return PageTimedOutError(limit.seconds, stacks)
    job.kills += 1
    if job.kills >= MAX_KILLS:
        log.error("a page ended its OCR worker %d times (last: worker %s, exit code %s)", job.kills, pid, exitcode)
        return PageKilledWorkerError(job.kills, exitcode)
    log.warning("OCR worker %s ended under a page (exit code %s); the page is tried again", pid, exitcode)
    return None


def take_report(path: str) -> str:
    """What a page's watchdog wrote (empty if it never fired); the file is removed."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
