"""Admission control of the read path: how many documents, and how many page bytes, at once.

The service process holds, per document, a small amount of state (its spooled upload lives on
disk, pdfium and Pillow read from that file) and, per page in flight, the decoded page. So the
service's own memory is bounded by two counters: ``Admission`` limits the documents (checked
when a request's headers have arrived, before its body is read), ``PageMemory`` limits the
bytes of decoded pages (reserved before a page is decoded, given back when nothing holds the
page any more: not the read path, not the documents thread still decoding it, and not the worker
supervisor, which lets a page go only once it is delivered, dropped from the queue, or its
worker has finished with it or died). Both are used from the event loop only, so they need no
lock.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ocr_service.errors import AppError, ErrorCode

# A decoded page costs more than its pixels while it is in the service: the decoder's own
# bitmap (pdfium renders 3-4 bytes per pixel, then Pillow copies it into its 4-byte RGB), the
# Pillow page (4 bytes per pixel for RGB), and the copy pickled for the worker (3 bytes per
# pixel, plus the pickle buffer). bench/bench_memory.py measures what a page really costs.
PAGE_BYTES_PER_PIXEL = 12


def page_cost(pixels: int) -> int:
    """The bytes a page of ``pixels`` pixels may hold in the service process at its peak."""
    return pixels * PAGE_BYTES_PER_PIXEL


class Slot:
    """One admitted document's place; ``release`` is idempotent."""

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission

    def release(self) -> None:
        if self._admission is not None:
            self._admission.active -= 1
            self._admission = None

    @property
    def held(self) -> bool:
        return self._admission is not None


class Admission:
    """At most ``limit`` documents in the service at once; the next one is told to come back."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.active = 0

    def enter(self) -> Slot:
        if self.active >= self.limit:
            raise AppError(
                ErrorCode.SERVICE_BUSY,
                f"The OCR service is busy with {self.active} documents; please try again shortly.",
                headers={"Retry-After": str(self.retry_after_s)},
            )
        self.active += 1
        return Slot(self)


class Reservation:
    """One page's share of the page memory; ``release`` (on the event loop) is idempotent, so
    whichever of the page's holders lets it go last may call it."""

    def __init__(self, memory: PageMemory, nbytes: int) -> None:
        self._memory: PageMemory | None = memory
        self.nbytes = nbytes

    def release(self) -> None:
        memory, self._memory = self._memory, None
        if memory is not None:
            memory._release(self.nbytes)

    @property
    def held(self) -> bool:
        return self._memory is not None


class PageMemory:
    """Bytes of decoded pages in the service; a page waits, in order of arrival, for its share.

    A page larger than the whole budget is clamped to it, so it still runs, alone.
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.held = 0
        self.peak = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        # A copy first (one C call, so atomic under the GIL): the metrics read this from the
        # management server's thread while the event loop changes the queue.
        return sum(1 for _, future in tuple(self._waiters) if not future.done())

    @asynccontextmanager
    async def reserve(self, nbytes: int) -> AsyncIterator[int]:
        """Hold ``nbytes`` (clamped to the budget) for the block; waits while the budget is full."""
        reservation = await self.acquire(nbytes)
        try:
            yield reservation.nbytes
        finally:
            reservation.release()

    async def acquire(self, nbytes: int) -> Reservation:
        """Hold ``nbytes`` (clamped to the budget) until the reservation is released; waits while
        the budget is full. For a page whose last holder is not the task that reserved it."""
        return Reservation(self, await self._acquire(nbytes))

    async def _acquire(self, nbytes: int) -> int:
        nbytes = max(0, min(nbytes, self.limit))
        if not self._waiters and self.held + nbytes <= self.limit:
            self._take(nbytes)
            return nbytes
        entry = (nbytes, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await entry[1]
        except asyncio.CancelledError:
            if entry[1].done() and not entry[1].cancelled():
                self._release(nbytes)  # granted in the same moment as it was cancelled
            else:
                entry[1].cancel()
                self._waiters.remove(entry)
                self._grant()  # a smaller page behind this one may fit now
            raise
        return nbytes

    def _take(self, nbytes: int) -> None:
        self.held += nbytes
        self.peak = max(self.peak, self.held)

    def _release(self, nbytes: int) -> None:
        self.held -= nbytes
        self._grant()

    def _grant(self) -> None:
        # First come, first served: a large page at the head is not overtaken by small ones,
        # or a stream of small pages could starve it forever.
        while self._waiters:
            nbytes, future = self._waiters[0]
            if future.done():
                self._waiters.popleft()
                continue
            if self.held + nbytes > self.limit:
                return
            self._waiters.popleft()
            self._take(nbytes)
            future.set_result(None)


def megabytes(nbytes: int) -> str:
    return f"{math.ceil(nbytes / 1024 / 1024)} MB"
