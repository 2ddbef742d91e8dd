"""The pages of a PDF: sized from the page tree here, rendered one at a time in a child process."""

from __future__ import annotations

import logging
import math
from typing import BinaryIO

from PIL import Image

from ocr_service.decoding import decoding
from ocr_service.errors import AppError, ErrorCode
from ocr_service.page_limits import PageLimits
from ocr_service.pdf_load import LoadFailure, OpenPdf, PdfLoadError
from ocr_service.pdf_render import PdfRenderer

log = logging.getLogger(__name__)


class PdfPages:
    """An open PDF. pdfium is not thread-safe: use an instance from one thread only."""

    exact_count = True

    def __init__(self, data: bytes | BinaryIO, limits: PageLimits, renderer: PdfRenderer) -> None:
        self.limits = limits
        with decoding("The PDF"):
            try:
                self._pdf = OpenPdf(data)
            except PdfLoadError as exc:
                raise _refusal(exc) from exc
        self.count = self._pdf.pages
        self._renderer = renderer
        self._key = renderer.add(data)

    def _size(self, index: int) -> tuple[float, float]:
        # From the page tree alone: pdfium parses no content stream for it.
        with decoding(_subject(index)):
            width, height = self._pdf.document.get_page_size(index)
        return width, height

    def check(self, index: int) -> None:
        width_pt, height_pt = self._size(index)
        self.limits.check_shape(index + 1, width_pt, height_pt)

    def pixels(self, index: int) -> int:
        """The pixels page ``index`` renders to (a larger page is rendered down to the limit)."""
        width_pt, height_pt = self._size(index)
        scale = self.limits.pdf_dpi / 72
        return min(math.ceil(width_pt * scale) * math.ceil(height_pt * scale), self.limits.max_page_pixels)

    def page(self, index: int) -> Image.Image:
        """Render page ``index`` at the configured DPI, or lower where the pixel limit demands,
        within the render time limit (422 DOCUMENT_TOO_COMPLEX past it)."""
        width_pt, height_pt = self._size(index)
        self.limits.check_shape(index + 1, width_pt, height_pt)
        scale = self._scale(index, width_pt, height_pt)
        image = self._renderer.render(self._key, index, scale, self.limits.render_timeout_s)
        return image.convert("RGB") if image.mode != "RGB" else image

    def _scale(self, index: int, width_pt: float, height_pt: float) -> float:
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
        return scale

    def close(self) -> None:
        self._renderer.remove(self._key)
        self._pdf.close()


def _refusal(error: PdfLoadError) -> AppError:
    """What pdfium's refusal to load the PDF means to the client."""
    if error.failure is LoadFailure.NO_PAGES:
        return AppError(ErrorCode.EMPTY_DOCUMENT, "The PDF has no pages.")
    if error.failure is LoadFailure.PASSWORD:
        return AppError(ErrorCode.CORRUPT_DOCUMENT, "The PDF is password-protected.")
    log.info("The PDF cannot be decoded: %s", error)
    return AppError(ErrorCode.CORRUPT_DOCUMENT, "The PDF is damaged and cannot be read.")


def _subject(index: int) -> str:
    return f"Page {index + 1} of the PDF"
