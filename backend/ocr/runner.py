"""The backend's own OCR worker loop: claims jobs from the database and feeds them to the OCR service.

Runs as an asyncio task in the app's lifespan (``APP_OCR_JOBS_CONCURRENCY`` jobs at once:
the OCR service's worker count, so every worker is busy and none queues). Tests drive it
with ``drain()`` and their own clock. Lines arrive from ``/ocr/stream`` and are stored page
by page, each page in a transaction of its own that never spans a call to the service.

Resume: a job taken up again (its runner died, its stream broke) asks the OCR service for
the pages it has not stored yet only (``firstPage = pages_done + 1``, the service's page
range), so a 200-page document broken at page 150 is not read from page 1 again; the stream
then numbers its pages from ``pages_done + 1`` (the document's own numbers), which is what
the event checks expect. A job whose pages are all stored (its runner died between the last
page and the end) ends DONE without a call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from backend.errors import ErrorCode
from backend.ocr.models import DEFAULT_MODEL, JobStatus, ModelSource
from backend.ocr.queue import Claimed, JobQueue, LeaseLost
from backend.ocr_client import (
    DocumentSource,
    OcrClient,
    OcrRejected,
    OcrStreamError,
    OcrStreamInterrupted,
    OcrUnavailable,
)
from backend.storage import Storage, StorageUnavailableError, local_file

log = logging.getLogger(__name__)

UNAVAILABLE = "OCR_SERVICE_UNAVAILABLE"
# The OCR service's answers (ocr_service/errors.py) when the model named cannot read: not in its
# store (UNKNOWN_MODEL; MODEL_NOT_FOUND elsewhere in its API), a file it cannot use, or not a
# recognition model.
_MODEL_GONE = frozenset({"UNKNOWN_MODEL", "MODEL_NOT_FOUND", "INVALID_MODEL", "WRONG_MODEL_KIND"})


class MalformedEvent(OcrStreamInterrupted):
    """The service sent an event the backend cannot use: handled like a broken stream."""

    def __init__(self, event: dict[str, Any]) -> None:
        super().__init__(f"The OCR service sent an event the backend cannot read: {str(event)[:200]}")


class JobRunner:
    def __init__(
        self,
        queue: JobQueue,
        client: OcrClient,
        storage: Storage,
        *,
        concurrency: int,
        poll_s: float,
        max_attempts: int,
        clock: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.queue = queue
        self.client = client
        self.storage = storage
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.max_attempts = max_attempts
        self.clock = clock
        self._sleep = sleep
        self._running: dict[asyncio.Task[None], Claimed] = {}

    async def run(self) -> None:
        """Forever: take up jobs while there is room, then wait a poll interval."""
        while True:
            try:
                await self.tick()
            except SQLAlchemyError:
                # A database restart must not end the loop: queued documents would wait for a
                # backend restart. The jobs already running handle their own database errors.
                log.warning("OCR job runner: the database did not answer; trying again", exc_info=True)
            await self._sleep(self.poll_s)

    async def tick(self) -> int:
        """Claim as many jobs as there is room for and start them; how many were claimed."""
        free = self.concurrency - len(self._running)
        if free <= 0:
            return 0
        claimed = await asyncio.to_thread(self.queue.claim, free, self.clock())
        for job in claimed:
            await self._retire(job.job_id)
            task = asyncio.create_task(self._run_job(job), name=f"ocr-job-{job.job_id}")
            self._running[task] = job
            task.add_done_callback(self._forget)
        return len(claimed)

    async def drain(self) -> None:
        """Run until no job can be claimed and none is running (tests; a one-shot command)."""
        while True:
            await self.tick()
            if not self._running:
                return
            await asyncio.wait(set(self._running), return_when=asyncio.FIRST_COMPLETED)

    async def stop(self) -> None:
        """Give the running jobs back to the queue (QUEUED) so another runner resumes them at once."""
        running = dict(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for task, job in running.items():
            # A task cancelled before it began never ran its own handlers: the job is handed back here.
            if task.cancelled():
                await self._end(job, JobStatus.QUEUED, None, "")

    async def _retire(self, job_id: int) -> None:
        """Stop this runner's earlier run of a job it has just claimed again.

        A job cancelled and re-queued (a batch retry) before this runner's watcher looked is
        claimed under the same owner: the earlier run would pass every lease guard too, and
        two readers would store the same pages. The new run resumes after the pages stored."""
        stale = [task for task, running in self._running.items() if running.job_id == job_id]
        for task in stale:
            task.cancel()
        await asyncio.gather(*stale, return_exceptions=True)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)

    async def _run_job(self, job: Claimed) -> None:
        if job.attempts > self.max_attempts:
            # Taken up again and again (each runner died on it): stop before it takes another one down.
            message = f"OCR was started {job.attempts} times for this document and never finished."
            await self._end(job, JobStatus.FAILED, UNAVAILABLE, message)
            return
        reading = asyncio.create_task(self._read(job), name=f"ocr-read-{job.job_id}")
        watching = asyncio.create_task(self._renew(job.job_id), name=f"ocr-watch-{job.job_id}")
        try:
            done, _ = await asyncio.wait({reading, watching}, return_when=asyncio.FIRST_COMPLETED)
            if reading not in done:
                # The watcher saw the job leave this runner (cancelled, or taken over): the
                # stream is closed now rather than at the next page, and nothing more is written.
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
                log.info("OCR job %s: stopped reading (cancelled or taken over)", job.job_id)
                return
            reading.result()
        except LeaseLost:
            log.warning("OCR job %s: no longer held by this runner (cancelled, or its lease expired)", job.job_id)
        except (OcrRejected, OcrStreamError) as exc:
            # The document's fault (corrupt, too many pages): the service's word, not retried.
            await self._end(job, JobStatus.FAILED, exc.code, exc.message)
        except OcrStreamInterrupted as exc:
            status = JobStatus.QUEUED if job.attempts < self.max_attempts else JobStatus.FAILED
            await self._end(job, status, UNAVAILABLE, exc.message)
        except OcrUnavailable as exc:
            # Breaker open, retries used up: FAILED, and POST /api/ocr/batches/{id}/retry re-queues it.
            await self._end(job, JobStatus.FAILED, UNAVAILABLE, exc.message)
        except StorageUnavailableError as exc:
            # The store, not the document: FAILED so the batch's retry route can re-queue it.
            log.error("OCR job %s: the document store cannot be reached: %s", job.job_id, exc)
            await self._end(
                job, JobStatus.FAILED, ErrorCode.STORAGE_UNAVAILABLE, "The document store cannot be reached."
            )
        except OSError as exc:
            log.exception("OCR job %s: the original of document %s cannot be read", job.job_id, job.document_id)
            await self._end(job, JobStatus.FAILED, "ORIGINAL_UNREADABLE", f"The original cannot be read: {exc}")
        except Exception:
            # The job's boundary: whatever broke, the job must not stay RUNNING until its lease
            # runs out (and then break the next runner the same way). The traceback is logged.
            log.exception("OCR job %s failed unexpectedly", job.job_id)
            await self._end(job, JobStatus.FAILED, "INTERNAL_ERROR", "OCR failed inside the backend; see its log.")
        finally:
            # Also when this task is cancelled (the runner stops): the stream is closed before
            # stop() hands the job back, so no page of it can be stored after that.
            for task in (reading, watching):
                task.cancel()
            await asyncio.gather(reading, watching, return_exceptions=True)

    async def _end(self, job: Claimed, status: JobStatus, code: str | None, message: str) -> None:
        try:
            await asyncio.to_thread(self.queue.finish, job.job_id, status, self.clock(), code, message)
        except LeaseLost:
            log.warning("OCR job %s: another runner took it up before it could end here", job.job_id)

    async def _renew(self, job_id: int) -> None:
        """Watch a running job: every poll interval, stop if it left this runner; renew its lease
        every third of the lease. Returns when the job is no longer this runner's: the person
        cancelled it (in this or any other backend process: the database says so), or the lease
        was lost to another runner."""
        # A poll interval longer than a third of the lease would let the lease run out while
        # the job reads well: the watch then looks every third of the lease.
        third = self.queue.lease.total_seconds() / 3
        step = min(self.poll_s, third)
        renew_every = max(1, int(third // step))
        polls = 0
        while True:
            await self._sleep(step)
            polls += 1
            try:
                if not await asyncio.to_thread(self.queue.holds, job_id):
                    return
                if polls % renew_every == 0:
                    await asyncio.to_thread(self.queue.renew, job_id, self.clock())
            except LeaseLost:
                log.warning("OCR job %s: lease lost while renewing it", job_id)
                return
            except SQLAlchemyError:
                # A database hiccup must not stop a job that is reading well: the next look tries
                # again, and the lease outlasts two missed renewals. (The page commit, not this,
                # decides whether a page is stored.)
                log.warning(
                    "OCR job %s: could not look at the job in the database; trying again", job_id, exc_info=True
                )

    async def _read(self, job: Claimed) -> None:
        if job.pages_done >= job.pages_total:
            # Nothing left to read (and a firstPage past the document would be refused).
            await asyncio.to_thread(self.queue.finish, job.job_id, JobStatus.DONE, self.clock())
            return
        # A copy on local disk when the store is remote: the stream below reads it in the event loop.
        original = await asyncio.to_thread(local_file, self.storage, job.storage_key)
        with original:
            try:
                await self._stream(job, original)
            except OcrRejected as exc:
                # A model nobody picked (the writer's, or the one the first pages were read
                # with) that the service no longer has: an admin deleted it. The archivist's OCR
                # goes on with the default model rather than failing; a person's pick fails.
                if job.model is None or job.model_source is ModelSource.REQUESTED or exc.code not in _MODEL_GONE:
                    raise
                await self._stream(await self._fall_back(job, exc), original)

    async def _fall_back(self, job: Claimed, exc: OcrRejected) -> Claimed:
        whose = "The writer's model" if job.model_source is ModelSource.WRITER else "The model"
        note = (
            f"{whose} '{job.model}' cannot be used by the OCR service ({exc.code}: {exc.message}); "
            "the document is read with the default model instead."
        )
        log.warning("OCR job %s: %s", job.job_id, note)
        await asyncio.to_thread(self.queue.fall_back, job.job_id, note, self.clock())
        return dataclasses.replace(job, model=None)

    async def _stream(self, job: Claimed, original: DocumentSource) -> None:
        model = job.model or DEFAULT_MODEL
        # The last page stored; the stream starts at the next one.
        page = job.pages_done
        started = False
        size: tuple[int, int] | None = None
        reader: tuple[str, str | None] = (model, None)
        lines: list[dict[str, Any]] = []
        seen: set[int] = set()
        # A job that stored no page yet asks for the whole document, without a range.
        first_page = page + 1 if page else None
        async with self.client.stream_pages(original, model=job.model, first_page=first_page) as events:
            async for event in events:
                kind = event["type"]
                if kind == "line":
                    index = event.get("index")
                    if not started or event.get("page") != page or not isinstance(index, int) or index in seen:
                        raise MalformedEvent(event)
                    seen.add(index)
                    lines.append(event)
                    continue
                # Checked before the page before it is stored: only a good next event proves it
                # complete. Pages come one after another from pages_done + 1; "done" only
                # after the document's last page (an early "done" would leave pages unread).
                number = event.get("page")
                if kind == "page":
                    if type(number) is not int or number != page + 1 or number > job.pages_total:
                        raise MalformedEvent(event)
                elif kind != "done" or page != job.pages_total:
                    raise MalformedEvent(event)
                if started:
                    await self._store(job, page, lines, reader, size)
                if kind == "done":
                    await asyncio.to_thread(self.queue.finish, job.job_id, JobStatus.DONE, self.clock())
                    return
                page, size, lines, seen, started = event["page"], _page_size(event), [], set(), True
                reader = _page_model(event, model)

    async def _store(
        self,
        job: Claimed,
        page: int,
        lines: list[dict[str, Any]],
        reader: tuple[str, str | None],
        size: tuple[int, int] | None,
    ) -> None:
        model, version = reader
        await asyncio.to_thread(
            self.queue.store_page, job, page, lines, model=model, model_version=version, now=self.clock(), size=size
        )


# The columns' width (pages.ocr_model, lines.model_name): a longer name is not the service's.
_MODEL_NAME_MAX = 100


def _page_model(event: dict[str, Any], requested: str) -> tuple[str, str | None]:
    """The recognition model and version that read the page, as its page event names them (the
    service pins both when the document starts); the requested name, version unknown, where the
    event names none usable (an older service)."""
    name, version = event.get("model"), event.get("modelVersion")
    if not isinstance(name, str) or not 0 < len(name) <= _MODEL_NAME_MAX:
        return requested, None
    return name, str(version) if type(version) is int and version >= 0 else None


def _page_size(event: dict[str, Any]) -> tuple[int, int] | None:
    """The page's pixels as the OCR service read it (its lines' space); None where it sent none usable."""
    width, height = event.get("width"), event.get("height")
    if type(width) is int and type(height) is int and 1 <= width < 2**31 and 1 <= height < 2**31:
        return width, height
    return None
