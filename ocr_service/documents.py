"""Documents in, page images out: sniff the type from the bytes, check the limits, rasterise.

Pages are produced one at a time (a PDF is rendered page by page, a TIFF frame by frame)
so that a long document never sits in memory as images all at once.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import BinaryIO

import pypdfium2 as pdfium
from PIL import Image, UnidentifiedImageError

from ocr_service.errors import AppError, ErrorCode

log = logging.getLogger(__name__)

# The limit is checked by us before any pixel is decoded; PIL's own global guard would
# raise a DecompressionBombError with a less useful message (and only at 2x its limit).
Image.MAX_IMAGE_PIXELS = None


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


@dataclass(frozen=True)
class PageLimits:
    max_pages: int
    max_page_pixels: int
    pdf_dpi: int


class Document:
    """An opened, checked document: its page count is known, its pages render on demand.

    ``data`` is the document's bytes, or a seekable binary file (a spooled upload) that pdfium
    and Pillow read from as they need it; the file must stay open until :meth:`close`.
    """

    def __init__(self, data: bytes | BinaryIO, limits: PageLimits) -> None:
        if isinstance(data, bytes):
            self.kind = sniff(data)
        else:
            data.seek(0)
            self.kind = sniff(data.read(1024))
            data.seek(0)
        self.limits = limits
        self._data = data
        self._pdf: pdfium.PdfDocument | None = None
        self._image: Image.Image | None = None
        if self.kind is DocumentType.PDF:
            self.page_count = self._open_pdf()
        else:
            self.page_count = self._open_image()
        if self.page_count == 0:
            raise AppError(ErrorCode.EMPTY_DOCUMENT, "The document has no pages.")
        if self.page_count > limits.max_pages:
            raise AppError(
                ErrorCode.TOO_MANY_PAGES,
                f"The document has {self.page_count} pages; at most {limits.max_pages} are accepted.",
                details={"pages": self.page_count, "maxPages": limits.max_pages},
            )

    def _open_pdf(self) -> int:
        try:
            self._pdf = pdfium.PdfDocument(self._data)
        except pdfium.PdfiumError as exc:
            # pdfium refuses a PDF whose page tree is empty, reporting "success" as the reason.
            if "PDFium: Success" in str(exc):
                raise AppError(ErrorCode.EMPTY_DOCUMENT, "The PDF has no pages.") from exc
            if "password" in str(exc).lower():
                raise AppError(ErrorCode.CORRUPT_DOCUMENT, "The PDF is password-protected.") from exc
            raise AppError(ErrorCode.CORRUPT_DOCUMENT, "The PDF is damaged and cannot be read.") from exc
        return len(self._pdf)

    def _open_image(self) -> int:
        try:
            image = Image.open(io.BytesIO(self._data) if isinstance(self._data, bytes) else self._data)
            frames = getattr(image, "n_frames", 1)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise AppError(ErrorCode.CORRUPT_DOCUMENT, "The image is damaged and cannot be read.") from exc
        self._image = image
        return int(frames)

    def pages(self) -> Iterator[Image.Image]:
        """Yield the pages in order, each decoded only when it is asked for."""
        for index in range(self.page_count):
            yield self.page(index)

    def page(self, index: int) -> Image.Image:
        if self._pdf is not None:
            return self._render_pdf_page(index)
        return self._decode_image_frame(index)

    def _render_pdf_page(self, index: int) -> Image.Image:
        assert self._pdf is not None
        try:
            page = self._pdf[index]
            width_pt, height_pt = page.get_size()
        except pdfium.PdfiumError as exc:
            raise AppError(ErrorCode.CORRUPT_DOCUMENT, f"Page {index + 1} of the PDF is damaged.") from exc
        scale = self.limits.pdf_dpi / 72
        pixels = width_pt * scale * height_pt * scale
        if pixels > self.limits.max_page_pixels:
            # Rendering is ours to size, so an oversized page (a plan, a poster) is rendered
            # at the largest resolution the limit allows instead of being refused.
            scale *= math.sqrt(self.limits.max_page_pixels / pixels)
            # pdfium rounds each side up; shrink until the rounded size fits.
            while math.ceil(width_pt * scale) * math.ceil(height_pt * scale) > self.limits.max_page_pixels:
                scale *= 0.995
            log.info("page %d rendered at %.0f dpi to stay within the pixel limit", index + 1, scale * 72)
        try:
            bitmap = page.render(scale=scale, grayscale=False)
            image = bitmap.to_pil()
        except pdfium.PdfiumError as exc:
            raise AppError(ErrorCode.CORRUPT_DOCUMENT, f"Page {index + 1} of the PDF cannot be rendered.") from exc
        finally:
            page.close()
        return image.convert("RGB") if image.mode != "RGB" else image

    def _decode_image_frame(self, index: int) -> Image.Image:
        assert self._image is not None
        try:
            self._image.seek(index)
            width, height = self._image.size
            if width * height > self.limits.max_page_pixels:
                raise AppError(
                    ErrorCode.PAGE_TOO_LARGE,
                    f"Page {index + 1} has {width}×{height} pixels; at most "
                    f"{self.limits.max_page_pixels:,} pixels per page are accepted.",
                    details={"page": index + 1, "width": width, "height": height},
                )
            frame = self._image.convert("RGB") if self._image.mode not in ("RGB", "L") else self._image.copy()
            frame.load()
        except AppError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise AppError(ErrorCode.CORRUPT_DOCUMENT, f"Page {index + 1} of the image is damaged.") from exc
        return frame

    def page_pixels(self, index: int) -> int:
        """At least the pixels :meth:`page` will give for ``index``, from headers only: what the
        read path reserves in its page memory before the page is decoded."""
        if self._pdf is not None:
            try:
                page = self._pdf[index]
                try:
                    width_pt, height_pt = page.get_size()
                finally:
                    page.close()
            except pdfium.PdfiumError as exc:
                raise AppError(ErrorCode.CORRUPT_DOCUMENT, f"Page {index + 1} of the PDF is damaged.") from exc
            scale = self.limits.pdf_dpi / 72
            pixels = math.ceil(width_pt * scale) * math.ceil(height_pt * scale)
        else:
            assert self._image is not None
            try:
                self._image.seek(index)
            except (OSError, EOFError) as exc:
                raise AppError(ErrorCode.CORRUPT_DOCUMENT, f"Page {index + 1} of the image is damaged.") from exc
            width, height = self._image.size
            pixels = width * height
        # A larger PDF page is rendered down to the limit; a larger image is refused when decoded.
        return min(pixels, self.limits.max_page_pixels)

    def check_all_pages(self) -> None:
        """Check every page's size before any work starts, so a bomb on page 9 fails at once."""
        if self._image is None:
            return
        for index in range(self.page_count):
            try:
                self._image.seek(index)
            except (OSError, EOFError) as exc:
                raise AppError(ErrorCode.CORRUPT_DOCUMENT, f"Page {index + 1} of the image is damaged.") from exc
            width, height = self._image.size
            if width * height > self.limits.max_page_pixels:
                raise AppError(
                    ErrorCode.PAGE_TOO_LARGE,
                    f"Page {index + 1} has {width}×{height} pixels; at most "
                    f"{self.limits.max_page_pixels:,} pixels per page are accepted.",
                    details={"page": index + 1, "width": width, "height": height},
                )

    def close(self) -> None:
        if self._pdf is not None:
            self._pdf.close()
        if self._image is not None:
            self._image.close()
