"""The read path: a document (a spooled upload or a URL) in, pages of recognised lines out.

``OcrService.admit`` is asked when a request's headers have arrived, before its body is read;
``OcrService.start`` then does every check that can fail on bad input *before* any result is
sent (so even ``/ocr/stream`` answers a 4xx for a corrupt file); ``OcrRun.events`` yields each
page as soon as it is done while the next pages are already in the pool. Every decoded page
holds its share of the page memory (``PageMemory``) from before it is decoded until nothing
holds it any more (for a page whose client left: until the documents thread and the worker
are done with it), so the pages of all documents together stay within the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from typing import Any, BinaryIO, TypeVar

from PIL import Image

from ocr_service.admission import Admission, PageMemory, Reservation, Slot, page_cost
from ocr_service.documents import Document, PageLimits
from ocr_service.engine.pipeline import PageResult
from ocr_service.errors import AppError, ErrorCode
from ocr_service.fetch import DocumentFetcher
from ocr_service.metrics import ServiceMetrics
from ocr_service.model_pins import pin_off_loop
from ocr_service.model_ref import ModelRef
from ocr_service.page_range import PageRange
from ocr_service.pdf_render import PdfRenderer
from ocr_service.pool import WorkerPool
from ocr_service.store import ModelStore

log = logging.getLogger(__name__)
T = TypeVar("T")

NO_MODEL_NOTICE = (
    "No recognition model is installed or chosen as default: lines were found but not read. "
    "Install a model (POST /models) or name one in the request."
)

OnThread = Callable[..., "asyncio.Future[Any]"]


@dataclass(frozen=True)
class OcrInput:
    """The document as a spooled file (the caller keeps it open until the run is closed) or a URL;
    ``pages``: the pages to read (all by default)."""

    file: BinaryIO | None = None
    url: str | None = None
    model: str | None = None
    pages: PageRange = field(default_factory=PageRange)


@dataclass(frozen=True)
class PageStarted:
    page: int
    pages: int
    width: int
    height: int


@dataclass(frozen=True)
class PageDone:
    page: int
    result: PageResult


@dataclass
class _PageInFlight:
    index: int
    # Set with the decoded page's size, once it is decoded (before it goes to a worker).
    decoded: asyncio.Future[tuple[int, int]]
    task: asyncio.Task[PageResult]


class OcrRun:
    """One admitted document on its way through the pool; always ``await aclose()`` it.

    ``indices``: the pages to read, from 0 (a page range); pages outside it are never decoded.
    Events carry the document's own page numbers and its whole page count.
    """

    def __init__(
        self,
        document: Document,
        model: ModelRef | None,
        segmentation_model: ModelRef,
        pool: WorkerPool,
        memory: PageMemory,
        on_thread: OnThread,
        resources: AsyncExitStack,
        indices: range,
    ) -> None:
        self.document = document
        self.model = model
        self.segmentation_model = segmentation_model
        self.pages = document.page_count
        self.indices = indices
        self._pool = pool
        self._memory = memory
        self._on_thread = on_thread
        self._resources = resources
        self._in_flight: deque[_PageInFlight] = deque()
        self._next_page = indices.start
        self._closed = False

    @property
    def model_name(self) -> str | None:
        return self.model.name if self.model else None

    async def _read_page(self, index: int, decoded: asyncio.Future[tuple[int, int]]) -> PageResult:
        pixels: int = await self._on_thread(self.document.page_pixels, index)
        # Given back by the page's last holder, not when this task ends: a client that leaves
        # must not free the memory of a page still being decoded or read by a worker, or one
        # that connects, sends a large page and hangs up, again and again, gets more pages
        # decoded at once than the budget allows.
        reservation = await self._memory.acquire(page_cost(pixels))
        image = await self._decode(index, reservation)
        try:
            if not decoded.done():
                decoded.set_result((image.width, image.height))
        except BaseException:
            reservation.release()
            raise
        return await self._pool.process_page(image, self.model, self.segmentation_model, let_go=reservation.release)

    async def _decode(self, index: int, reservation: Reservation) -> Image.Image:
        """Page ``index``, decoded on the documents thread. If it fails, its memory is given
        back; if the caller is cancelled, once the thread is done with it (a decode that has
        not started yet is skipped)."""
        wanted = True

        def decode() -> Image.Image | None:
            return self.document.page(index) if wanted else None

        try:
            decoding = self._on_thread(decode)
        except BaseException:  # the documents thread is shut down: the service is stopping
            reservation.release()
            raise
        try:
            image = await asyncio.shield(decoding)
        except asyncio.CancelledError:
            wanted = False
            decoding.add_done_callback(lambda _: reservation.release())
            raise
        except BaseException:
            reservation.release()
            raise
        assert image is not None  # only a cancelled caller's decode is skipped
        return image

    def _submit(self) -> None:
        decoded: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._read_page(self._next_page, decoded))
        self._in_flight.append(_PageInFlight(self._next_page, decoded, task))
        self._next_page += 1

    def _fill_window(self) -> None:
        # As many pages in flight as there are workers: enough to keep every core busy; the
        # page memory decides how many of them may be decoded at once.
        while self._next_page < self.indices.stop and len(self._in_flight) < max(1, self._pool.workers):
            self._submit()

    async def _decoded(self, page: _PageInFlight) -> tuple[int, int]:
        """The page's size once it is decoded; the page's own error if it could not be."""
        waiting: set[asyncio.Future[Any]] = {page.decoded, page.task}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not page.decoded.done():
            page.task.result()  # raises why the page failed before it was decoded
        return page.decoded.result()

    async def begin(self) -> None:
        """Decode the first page now: a damaged single image becomes a 4xx before any response
        is sent, instead of an error event in a 200 stream."""
        self._fill_window()
        await self._decoded(self._in_flight[0])

    async def events(self) -> AsyncIterator[PageStarted | PageDone]:
        """Pages in order; a page that fails (even to render) fails only when its turn comes."""
        self._fill_window()
        while self._in_flight:
            page = self._in_flight[0]
            width, height = await self._decoded(page)
            yield PageStarted(page.index + 1, self.pages, width, height)
            result = await page.task
            self._in_flight.popleft()
            self._fill_window()
            yield PageDone(page.index + 1, result)

    async def aclose(self) -> None:
        """Cancel the pages still in flight (their memory is given back), close the document."""
        if self._closed:
            return
        self._closed = True
        pending = [p.task for p in self._in_flight]
        for page in self._in_flight:
            page.task.cancel()
            page.decoded.cancel()
        self._in_flight.clear()
        # Collect what the cancelled tasks raised, so nothing is reported as never retrieved.
        await asyncio.gather(*pending, return_exceptions=True)
        await self._resources.aclose()


class OcrService:
    def __init__(
        self,
        *,
        limits: PageLimits,
        store: ModelStore,
        pool: WorkerPool,
        fetcher: DocumentFetcher,
        admission: Admission,
        memory: PageMemory,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.limits = limits
        self.metrics = metrics
        self.store = store
        self.pool = pool
        self.fetcher = fetcher
        self.admission = admission
        self.memory = memory
        # pdfium is not thread-safe: every document operation runs on this one thread.
        self._documents_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="documents")
        # Renders PDF pages in a child process it kills when a page passes its time limit.
        self._renderer = PdfRenderer(address_space=limits.render_address_space)

    def _on_thread(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._documents_thread, fn, *args)

    def admit(self) -> Slot:
        """A place for one more document, asked before its body is read; 503 when there is none."""
        try:
            if not self.pool.ready:
                raise AppError(
                    ErrorCode.MODELS_NOT_READY,
                    "The OCR service is still loading its models; please try again shortly.",
                    headers={"Retry-After": "10"},
                )
            return self.admission.enter()
        except AppError as refusal:
            if self.metrics is not None:
                self.metrics.refused(refusal.code.value)
            raise

    async def start(self, request: OcrInput) -> OcrRun:
        """Open and check the document and decode its first page (the caller holds its slot)."""
        # Resolved and pinned once per document: every page is read with the same files, even
        # if a model is replaced, removed or another one chosen meanwhile. Off the loop (the
        # store's file lock, maybe a copy across file systems); a client that leaves meanwhile
        # leaves no pin behind.
        pin = await pin_off_loop(self.store.pin_models, request.model)
        model, segmentation_model = pin.model, pin.segmentation_model
        resources = AsyncExitStack()
        resources.callback(pin.release)
        try:
            source = request.file
            if source is None:
                assert request.url is not None
                # Unnamed, so it is gone from the disk as soon as it is closed, however the run ends.
                source = resources.enter_context(tempfile.TemporaryFile(prefix="ocr-download-"))
                await self.fetcher.fetch_into(request.url, source)
            document = await self._open(source)
            # pdfium objects are closed on the documents thread, like every other use of them.
            resources.push_async_callback(self._on_thread, document.close)
            # After the page-count limit (checked as the document opened): a range refers to pages
            # of a document that is accepted as a whole.
            indices = request.pages.indices(document.page_count)
            await self._on_thread(document.check_pages, indices)
            run = OcrRun(
                document, model, segmentation_model, self.pool, self.memory, self._on_thread, resources, indices
            )
        except BaseException:
            await resources.aclose()
            raise
        try:
            await run.begin()
        except BaseException:
            await run.aclose()
            raise
        log.info(
            "OCR of a %s document with %d page(s), pages %d-%d, model %s, segmentation model %s",
            document.kind,
            document.page_count,
            indices.start + 1,
            indices.stop,
            model.name if model else None,
            segmentation_model.name,
        )
        return run

    async def _open(self, source: BinaryIO) -> Document:
        opening = self._on_thread(partial(Document, renderer=self._renderer), source, self.limits)
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The client left while the documents thread opens the file; that thread goes on
            # (bounded by the parse budget). Wait for it and close the document there: left to
            # the garbage collector, pypdfium2 would close it on the event loop's thread while
            # the documents thread renders another PDF (pdfium is not thread-safe), and the
            # caller would close the spooled file under the thread that still reads it.
            with contextlib.suppress(AppError):
                opened = await opening
                await self._on_thread(opened.close)
            raise

    def close(self) -> None:
        self._documents_thread.shutdown(wait=False, cancel_futures=True)
        self._renderer.close()
