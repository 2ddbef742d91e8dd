"""Page images for the UI: rendered once, on first request, kept in storage, then only read.

A page's display image and thumbnail are rendered together (one decode) in a worker thread,
never on the event loop. Within a process one render per page runs at a time (a lock per
page; later requests wait for it and then read what it stored) and at most
``concurrency`` pages render at once. Across processes the keys are set by an UPDATE that
only succeeds while the page has none, so of two processes rendering the same page one
wins; the other deletes its files and serves the winner's. Nothing is ever rendered twice
into the page row, and a page whose document is purged meanwhile leaves no file behind.
"""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
import tempfile
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, BinaryIO, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from backend.documents.model_labels import ModelRead, model_read, with_model_runs
from backend.documents.models import Document, Page
from backend.documents.render import PdfRenderers, RenderedPage, RenderLimits, ocr_sizes, render_page
from backend.documents.schemas import PageOut
from backend.errors import AppError, ErrorCode
from backend.storage import Storage

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
# PDF pages remembered as too complex to render (the oldest forgotten first).
_TOO_COMPLEX_REMEMBERED = 1024


def page_out(page: Page, read: ModelRead) -> PageOut:
    base = f"/api/documents/{page.document_id}/pages/{page.number}"
    return PageOut(
        number=page.number,
        width=page.width,
        height=page.height,
        image_url=f"{base}/image",
        thumbnail_url=f"{base}/thumbnail",
        model=read.model,
        model_label=read.label,
        ocr_at=page.ocr_at,
        reviewed=page.reviewed_at is not None,
        reviewed_at=page.reviewed_at,
        reviewed_by=page.reviewed_by,
    )


@contextmanager
def seekable_original(storage: Storage, document: Document) -> Iterator[BinaryIO]:
    """The original, seekable (pdfium and Pillow read pages out of order): spooled to disk if need be."""
    with seekable_stored(storage, document.storage_key) as source:
        yield source


@contextmanager
def seekable_stored(storage: Storage, key: str) -> Iterator[BinaryIO]:
    """The stored file ``key``, seekable: spooled to disk where the store streams it (S3)."""
    with storage.open(key) as stream:
        if stream.seekable():
            yield stream
            return
        with tempfile.TemporaryFile() as copy:
            shutil.copyfileobj(stream, copy, _CHUNK)
            copy.seek(0)
            yield cast(BinaryIO, copy)


def record_sizes(
    session: Session, storage: Storage, limits: RenderLimits, document: Document, rows: Sequence[Page]
) -> None:
    """Record the OCR's pixel size of ``rows`` (pages of ``document``) that have none, from the
    original's headers; commits, and refreshes the rows."""
    with seekable_original(storage, document) as source:
        sizes = ocr_sizes(source, document.media_type, limits)
    for page in rows:
        if page.number > len(sizes):
            continue
        width, height = sizes[page.number - 1]
        # Only where none is recorded: the OCR service's own word (a later change) is not overwritten.
        session.execute(
            update(Page)
            .where(Page.id == page.id, Page.width.is_(None))
            .values(width=width, height=height)
            .execution_options(synchronize_session=False)
        )
    session.commit()
    for page in rows:
        session.refresh(page)


class PageKind(StrEnum):
    IMAGE = "image"
    THUMBNAIL = "thumbnail"


@dataclass(frozen=True)
class PageImage:
    """A stored page image; ``body`` is None when the client's copy (If-None-Match) is current."""

    etag: str
    body: BinaryIO | None


def etag_of(key: str) -> str:
    # A key is never reused and its file never changes: the key itself is a strong validator.
    return f'"{key.rsplit("/", 1)[-1]}"'


class PageLocks:
    """One asyncio lock per page, dropped when nobody holds or waits for it (no growth with pages seen)."""

    def __init__(self) -> None:
        self._locks: dict[int, asyncio.Lock] = {}
        self._users: Counter[int] = Counter()

    @asynccontextmanager
    async def hold(self, page_id: int) -> AsyncIterator[None]:
        lock = self._locks.setdefault(page_id, asyncio.Lock())
        self._users[page_id] += 1
        try:
            async with lock:
                yield
        finally:
            self._users[page_id] -= 1
            if self._users[page_id] == 0:
                del self._users[page_id], self._locks[page_id]

    def waiting(self, page_id: int) -> int:
        """Requests holding or waiting for the page's lock."""
        return self._users[page_id]

    def __len__(self) -> int:
        return len(self._locks)


def _key(page: Page, kind: PageKind) -> str | None:
    return page.image_key if kind is PageKind.IMAGE else page.thumbnail_key


def _changed(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


class PageImages:
    def __init__(self, storage: Storage, limits: RenderLimits, *, concurrency: int) -> None:
        self.storage = storage
        self.limits = limits
        self.pdf = PdfRenderers(concurrency, limits.pdf_render_timeout_s, limits.pdf_render_address_space)
        # Replaceable: tests count renders through it.
        self.render: Callable[[BinaryIO, str, int, RenderLimits], RenderedPage] = self._render
        self.locks = PageLocks()
        self._concurrency = concurrency
        self._slots: asyncio.Semaphore | None = None
        # PDF pages refused as too complex (DOCUMENT_TOO_COMPLEX), until this process ends.
        self._too_complex: OrderedDict[tuple[str, int], AppError] = OrderedDict()

    def _render(self, source: BinaryIO, media_type: str, number: int, limits: RenderLimits) -> RenderedPage:
        return render_page(source, media_type, number, limits, self.pdf)

    def close(self) -> None:
        """End the PDF renderers' children (a render waiting on one gives up at once)."""
        self.pdf.close()

    # --- the page list ---------------------------------------------------------------

    def pages(self, session: Session, document: Document) -> list[PageOut]:
        """Every page with its size in the OCR's pixels (read from the original's headers once)
        and the model that read it."""
        statement = with_model_runs(select(Page).where(Page.document_id == document.id), Page.ocr_model)
        found = session.execute(statement.order_by(Page.number)).all()
        rows = [page for page, *_ in found]
        if any(page.width is None or page.height is None for page in rows):
            record_sizes(session, self.storage, self.limits, document, rows)
        return [
            page_out(page, model_read(page.ocr_model, page.ocr_model_version, tuple(runs))) for page, *runs in found
        ]

    # --- one page's image ------------------------------------------------------------

    async def fetch(
        self, session: Session, document: Document, number: int, kind: PageKind, current: Callable[[str], bool]
    ) -> PageImage:
        """The page's image of ``kind``, rendered first if it never was; ``current(etag)``: the client has it."""
        page = await asyncio.to_thread(self._page, session, document.id, number)
        key = _key(page, kind) or await self._rendered(session, document, page.id, kind)
        if current(etag_of(key)):
            return PageImage(etag_of(key), None)
        try:
            body = await asyncio.to_thread(self.storage.open, key)
        except FileNotFoundError:
            # The cached file is gone (a storage restored without pages/): render the page again.
            log.warning(
                "page %d of document %d: its cached image %s is missing; rendering it again", number, document.id, key
            )
            await asyncio.to_thread(self._forget, session, page.id, key)
            key = await self._rendered(session, document, page.id, kind)
            body = await asyncio.to_thread(self.storage.open, key)
        return PageImage(etag_of(key), body)

    def _page(self, session: Session, document_id: int, number: int) -> Page:
        page = session.scalar(select(Page).where(Page.document_id == document_id, Page.number == number))
        if page is None:
            raise AppError(ErrorCode.PAGE_NOT_FOUND, f"Document {document_id} has no page {number}.")
        return page

    async def _rendered(self, session: Session, document: Document, page_id: int, kind: PageKind) -> str:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._concurrency)
        async with self.locks.hold(page_id):
            # Whoever held the lock before may have rendered it: read the row again first.
            page = await asyncio.to_thread(self._fresh, session, document, page_id)
            if page.image_key is None:
                # By the original's key (never reused) and the page: a page id may be (SQLite).
                refused_key = (document.storage_key, page.number)
                if (refused := self._too_complex.get(refused_key)) is not None:
                    raise refused
                async with self._slots:
                    try:
                        page = await asyncio.to_thread(self._render_and_store, session, document, page)
                    except AppError as exc:
                        if exc.code is ErrorCode.DOCUMENT_TOO_COMPLEX:
                            self._remember_too_complex(refused_key, exc)
                        raise
        key = _key(page, kind)
        assert key is not None  # set together with the other, by the one UPDATE that stored them
        return key

    def _remember_too_complex(self, key: tuple[str, int], error: AppError) -> None:
        # Answered at once from now on: each try would hold a renderer for the whole time limit
        # (the thumbnail's request right after the image's, a reload, someone pressing F5).
        self._too_complex[key] = error
        while len(self._too_complex) > _TOO_COMPLEX_REMEMBERED:
            self._too_complex.popitem(last=False)

    def _fresh(self, session: Session, document: Document, page_id: int) -> Page:
        page = session.get(Page, page_id, populate_existing=True)
        if page is None:  # the document was purged meanwhile
            raise AppError(ErrorCode.DOCUMENT_NOT_FOUND, f"There is no document {document.id}.")
        return page

    def _render_and_store(self, session: Session, document: Document, page: Page) -> Page:
        session.commit()  # ends the reads' transaction: none stays open across a render (seconds)
        with seekable_original(self.storage, document) as source:
            rendered = self.render(source, document.media_type, page.number, self.limits)
        keys = [self.storage.save(io.BytesIO(rendered.image), "pages")]
        try:
            keys.append(self.storage.save(io.BytesIO(rendered.thumbnail), "pages"))
            result = session.execute(
                update(Page)
                .where(Page.id == page.id, Page.image_key.is_(None))
                .values(
                    image_key=keys[0],
                    thumbnail_key=keys[1],
                    width=func.coalesce(Page.width, rendered.width),
                    height=func.coalesce(Page.height, rendered.height),
                )
                .execution_options(synchronize_session=False)
            )
            session.commit()
        except BaseException:
            session.rollback()
            self._delete(keys)
            raise
        if _changed(result) != 1:
            # Another process stored its rendering first (or the page is gone): serve that one.
            self._delete(keys)
        else:
            log.info("page %d of document %d rendered", page.number, document.id)
        return self._fresh(session, document, page.id)

    def _forget(self, session: Session, page_id: int, key: str) -> None:
        page = session.get(Page, page_id, populate_existing=True)
        if page is None or key not in (page.image_key, page.thumbnail_key):
            return
        stale = [k for k in (page.image_key, page.thumbnail_key) if k is not None]
        session.execute(
            update(Page)
            .where(Page.id == page_id, Page.image_key == page.image_key)
            .values(image_key=None, thumbnail_key=None)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        self._delete(stale)

    def _delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.storage.delete(key)
