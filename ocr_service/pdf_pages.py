"""The pages of a PDF: sized from the page tree, rendered one at a time with pdfium."""

from __future__ import annotations

import logging
import math
from typing import BinaryIO

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image

from ocr_service.decoding import decoding
from ocr_service.errors import AppError, ErrorCode
from ocr_service.page_limits import PageLimits

log = logging.getLogger(__name__)


class PdfPages:
    """An open PDF. pdfium is not thread-safe: use an instance from one thread only."""

    exact_count = True

    def __init__(self, data: bytes | BinaryIO, limits: PageLimits) -> None:
        self.limits = limits
        with decoding("The PDF"):
            try:
                self._pdf = pdfium.PdfDocument(data)
            except pdfium.PdfiumError as exc:
                explained = _explain(data)
                if explained is None:
                    raise
                raise explained from exc
        try:
            with decoding("The PDF"):
                self.count = len(self._pdf)
        except BaseException:
            self._pdf.close()
            raise

    def _size(self, index: int) -> tuple[float, float]:
        # From the page tree alone: pdfium parses no content stream for it.
        with decoding(_subject(index)):
            width, height = self._pdf.get_page_size(index)
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
        """Render page ``index`` at the configured DPI, or lower where the pixel limit demands."""
        width_pt, height_pt = self._size(index)
        self.limits.check_shape(index + 1, width_pt, height_pt)
        scale = self._scale(index, width_pt, height_pt)
        with decoding(_subject(index)):
            page = self._pdf[index]
            try:
                image = page.render(scale=scale, grayscale=False).to_pil()
            finally:
                page.close()
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
        self._pdf.close()


def _explain(source: bytes | BinaryIO) -> AppError | None:
    """The refusals pdfium can tell apart from plain damage."""
    # Only on this refusal path is a spooled file read whole: the raw load needs the bytes.
    if isinstance(source, bytes):
        data = source
    else:
        source.seek(0)
        data = source.read()
    # pypdfium2 also refuses a PDF that loads but has no pages, and then reports whatever error
    # this thread's pdfium saw last (after a damaged PDF: "format error"). Loading it again
    # tells the two apart; a failed load sets the error afresh.
    loaded = pdfium_c.FPDF_LoadMemDocument64(data, len(data), None)
    if loaded:
        pdfium_c.FPDF_CloseDocument(loaded)
        return AppError(ErrorCode.EMPTY_DOCUMENT, "The PDF has no pages.")
    if pdfium_c.FPDF_GetLastError() == pdfium_c.FPDF_ERR_PASSWORD:
        return AppError(ErrorCode.CORRUPT_DOCUMENT, "The PDF is password-protected.")
    return None


def _subject(index: int) -> str:
    return f"Page {index + 1} of the PDF"
