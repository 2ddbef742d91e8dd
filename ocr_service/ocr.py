"""The read path: a document (bytes or URL) in, pages of recognised lines out, page by page.

``OcrService.start`` does every check that can fail on bad input *before* any result is
sent (so even ``/ocr/stream`` answers a 4xx for a corrupt file); ``OcrRun.events`` then
yields each page as soon as it is done while the next pages are already in the pool.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image

from ocr_service.documents import Document, PageLimits
from ocr_service.engine.pipeline import PageResult
from ocr_service.errors import AppError, ErrorCode
from ocr_service.fetch import DocumentFetcher
from ocr_service.model_ref import ModelRef
from ocr_service.pool import Admission, WorkerPool
from ocr_service.store import ModelStore

log = logging.getLogger(__name__)
T = TypeVar("T")

NO_MODEL_NOTICE = (
    "No recognition model is installed or chosen as default: lines were found but not read. "
    "Install a model (POST /models) or name one in the request."
)


@dataclass(frozen=True)
class OcrInput:
    data: bytes | None = None
    url: str | None = None
    model: str | None = None


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


class OcrRun:
    """One admitted document on its way through the pool; always ``close()`` it."""

    def __init__(
        self,
        document: Document,
        model: ModelRef | None,
        segmentation_model: ModelRef,
        pool: WorkerPool,
        on_thread: Callable[..., Any],
        release: Callable[[], None],
        first_page: Image.Image | None = None,
    ) -> None:
        self.document = document
        self.model = model
        self.segmentation_model = segmentation_model
        self.pages = document.page_count
        self._pool = pool
        self._on_thread = on_thread
        self._release = release
        self._first_page = first_page
        self._closed = False

    @property
    def model_name(self) -> str | None:
        return self.model.name if self.model else None

    async def _render(self, index: int) -> Image.Image:
        if index == 0 and self._first_page is not None:
            first, self._first_page = self._first_page, None
            return first
        rendered: Image.Image = await self._on_thread(self.document.page, index)
        return rendered

    async def _read(self, rendering: asyncio.Task[Image.Image]) -> PageResult:
        return await self._pool.process_page(await rendering, self.model, self.segmentation_model)

    async def events(self) -> AsyncIterator[PageStarted | PageDone]:
        """Pages in order; a page that fails (even to render) fails only when its turn comes."""
        # Keep as many pages in flight as there are workers: enough to keep every core busy,
        # few enough that a 200-page PDF never sits in memory as images.
        window = max(1, self._pool.workers)
        in_flight: deque[tuple[int, asyncio.Task[Image.Image], asyncio.Task[PageResult]]] = deque()
        next_page = 0

        def submit() -> None:
            nonlocal next_page
            rendering = asyncio.create_task(self._render(next_page))
            in_flight.append((next_page, rendering, asyncio.create_task(self._read(rendering))))
            next_page += 1

        try:
            while next_page < self.pages and len(in_flight) < window:
                submit()
            while in_flight:
                index, rendering, reading = in_flight[0]
                image = await rendering
                yield PageStarted(index + 1, self.pages, image.width, image.height)
                result = await reading
                in_flight.popleft()
                if next_page < self.pages:
                    submit()
                yield PageDone(index + 1, result)
        finally:
            for _, rendering, reading in in_flight:
                rendering.cancel()
                reading.cancel()
            # Collect what the cancelled tasks raised, so nothing is reported as never retrieved.
            await asyncio.gather(*(t for _, r, p in in_flight for t in (r, p)), return_exceptions=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._release()
            # pdfium objects are closed on the documents thread, like every other use of them.
            self._on_thread(self.document.close)


class OcrService:
    def __init__(
        self,
        *,
        limits: PageLimits,
        max_document_bytes: int,
        store: ModelStore,
        pool: WorkerPool,
        fetcher: DocumentFetcher,
        admission: Admission,
    ) -> None:
        self.limits = limits
        self.max_document_bytes = max_document_bytes
        self.store = store
        self.pool = pool
        self.fetcher = fetcher
        self.admission = admission
        # pdfium is not thread-safe: every document operation runs on this one thread.
        self._documents_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="documents")

    def _on_thread(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._documents_thread, fn, *args)

    async def start(self, request: OcrInput) -> OcrRun:
        if not self.pool.ready:
            raise AppError(
                ErrorCode.MODELS_NOT_READY,
                "The OCR service is still loading its models; please try again shortly.",
                headers={"Retry-After": "10"},
            )
        # Resolved and pinned once per document: every page is read with the same files, even
        # if a model is replaced, removed or another one chosen meanwhile. On the loop, not a
        # thread: a cancelled await would leave a pin nobody releases (the store lock is brief).
        pin = self.store.pin_models(request.model)
        model, segmentation_model = pin.model, pin.segmentation_model
        try:
            self.admission.enter()
        except BaseException:
            pin.release()
            raise

        def release() -> None:
            try:
                self.admission.leave()
            finally:
                pin.release()

        try:
            if request.url is not None:
                data = await self.fetcher.fetch(request.url)
            else:
                assert request.data is not None
                data = request.data
            if len(data) > self.max_document_bytes:
                raise AppError(
                    ErrorCode.DOCUMENT_TOO_LARGE,
                    f"The document is larger than the limit of {self.max_document_bytes / 1024 / 1024:g} MB.",
                )
            document = await self._on_thread(Document, data, self.limits)
            try:
                await self._on_thread(document.check_all_pages)
                # Decoding the first page now turns a damaged single image into a 4xx
                # before any response is sent, instead of an error event in a 200 stream.
                first_page = await self._on_thread(document.page, 0)
            except AppError:
                await self._on_thread(document.close)
                raise
        except BaseException:
            release()
            raise
        log.info(
            "OCR of a %s document with %d page(s), model %s, segmentation model %s",
            document.kind,
            document.page_count,
            model.name if model else None,
            segmentation_model.name,
        )
        return OcrRun(document, model, segmentation_model, self.pool, self._on_thread, release, first_page)

    def close(self) -> None:
        self._documents_thread.shutdown(wait=False, cancel_futures=True)
