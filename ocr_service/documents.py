"""Documents in, page images out: sniff the type from the bytes, check the limits, rasterise.

Pages are produced one at a time (a PDF is rendered page by page, a TIFF frame by frame)
so that a long document never sits in memory as images all at once. Every decoder call on
the client's bytes runs inside :func:`ocr_service.decoding.decoding`; the image and PDF
halves live in :mod:`ocr_service.image_pages` and :mod:`ocr_service.pdf_pages`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import BinaryIO, Protocol

from PIL import Image

from ocr_service.decoding import ParseBudget
from ocr_service.errors import AppError, ErrorCode
from ocr_service.image_pages import ImagePages
from ocr_service.page_limits import PageLimits
from ocr_service.pdf_pages import PdfPages
from ocr_service.pdf_render import PdfRenderer, shared_renderer

__all__ = ["Document", "DocumentType", "PageLimits", "sniff"]


class DocumentType(StrEnum):
    PDF = "pdf"
    PNG = "png"
    JPEG = "jpeg"
    TIFF = "tiff"
    WEBP = "webp"


_MAGIC: list[tuple[bytes, int, DocumentType]] = [
    (b"%PDF-", 0, DocumentType.PDF),
    (b"\x89PNG\r\n\x1a\n", 0, DocumentType.PNG),
    (b"\xff\xd8\xff", 0, DocumentType.JPEG),
    (b"II*\x00", 0, DocumentType.TIFF),
    (b"MM\x00*", 0, DocumentType.TIFF),
    (b"WEBP", 8, DocumentType.WEBP),
]


def sniff(data: bytes) -> DocumentType:
    """The document's type, from its first bytes only (never its name or declared type)."""
    if not data:
        raise AppError(ErrorCode.EMPTY_DOCUMENT, "The document is empty (0 bytes).")
    # A PDF may carry up to 1 KB of junk before its header; readers accept that, so do we.
    if b"%PDF-" in data[:1024]:
        return DocumentType.PDF
    for magic, offset, kind in _MAGIC:
        if data[offset : offset + len(magic)] == magic and (kind != DocumentType.WEBP or data[:4] == b"RIFF"):
            return kind
    raise AppError(
        ErrorCode.UNSUPPORTED_DOCUMENT_TYPE,
        "The file is neither a PDF nor a PNG, JPEG, TIFF or WebP image.",
    )


class Pages(Protocol):
    """One document format's pages: counted and checked from headers, decoded one at a time."""

    count: int
    exact_count: bool

    def check(self, index: int) -> None: ...

    def page(self, index: int) -> Image.Image: ...

    def pixels(self, index: int) -> int: ...

    def close(self) -> None: ...


class Document:
    """An opened, checked document: its page count is known, its pages render on demand.

    ``data`` is the document's bytes, or a seekable binary file (a spooled upload) that pdfium
    and Pillow read from as they need it; the file must stay open until :meth:`close`.
    ``renderer`` renders a PDF's pages (the service's own; else one shared by the process).
    """

    def __init__(
        self,
        data: bytes | BinaryIO,
        limits: PageLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
        renderer: PdfRenderer | None = None,
    ) -> None:
        if isinstance(data, bytes):
            self.kind = sniff(data)
        else:
            data.seek(0)
            self.kind = sniff(data.read(1024))
            data.seek(0)
        self.limits = limits
        self._budget = ParseBudget(limits.open_timeout_s, clock)
        with self._budget.running():
            self._pages: Pages = (
                PdfPages(data, limits, renderer or shared_renderer())
                if self.kind is DocumentType.PDF
                else ImagePages(data, self.kind.value.upper(), limits, self._budget)
            )
        self.page_count = self._pages.count
        try:
            self._check_count()
        except AppError:
            self._pages.close()
            raise

    def _check_count(self) -> None:
        if self.page_count == 0:
            raise AppError(ErrorCode.EMPTY_DOCUMENT, "The document has no pages.")
        if self.page_count > self.limits.max_pages:
            if self._pages.exact_count:
                message, details = f"The document has {self.page_count} pages", {"pages": self.page_count}
            else:
                # Counting stopped one page past the limit: a TIFF's frames are found one by one.
                message, details = f"The document has more than {self.limits.max_pages} pages", {}
            raise AppError(
                ErrorCode.TOO_MANY_PAGES,
                f"{message}; at most {self.limits.max_pages} are accepted.",
                details={**details, "maxPages": self.limits.max_pages},
            )

    def pages(self) -> Iterator[Image.Image]:
        """Yield the pages in order, each decoded only when it is asked for."""
        for index in range(self.page_count):
            yield self.page(index)

    def page(self, index: int) -> Image.Image:
        """Page ``index`` (from 0) upright, in mode RGB or L, without metadata."""
        return self._pages.page(index)

    def page_pixels(self, index: int) -> int:
        """At least the pixels :meth:`page` will give for ``index``, from headers only: what the
        read path reserves in its page memory before the page is decoded."""
        return self._pages.pixels(index)

    def check_all_pages(self) -> None:
        """Check every page's size and shape from its header before any work starts, so a
        bomb on page 9 fails at once; within the document's time budget."""
        self.check_pages(range(self.page_count))

    def check_pages(self, indices: range) -> None:
        """:meth:`check_all_pages` for the pages that will be read (a page range): a page
        outside it is neither checked nor decoded."""
        with self._budget.running():
            for index in indices:
                self._budget.check()
                self._pages.check(index)

    def close(self) -> None:
        self._pages.close()
