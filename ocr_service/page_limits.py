"""The limits every page of a document is checked against, from its header, before work starts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from ocr_service.errors import AppError, ErrorCode

# blla, kraken's packaged segmentation model, scales every page to this height keeping its
# aspect ratio (its input is (1, 3, 1800, 0)); a wide page therefore becomes a wide input.
SEGMENTATION_HEIGHT = 1800

# Seconds pdfium may take to render one PDF page (OCR_PDF_RENDER_TIMEOUT_S): a scanned A4 page
# at 300 dpi takes about 1 s on a loaded 2-core machine, a path of 100 000 segments 2 s.
PDF_RENDER_TIMEOUT_S = 30.0

# The PDF renderer child's address space (RLIMIT_AS, OCR_PDF_RENDER_MEMORY_MB), so that a page
# that makes pdfium allocate without bound ends the child, not the machine's memory (measured:
# a 4 KB page of forms nested nine levels deep grows it by 500 MB a second, 15 GB within the
# render time limit): the interpreter, pdfium and a thread's arena (under 100 MB mapped), plus
# per pixel of the largest page the bitmap pdfium renders into (4 bytes) and room for three
# times as much in its intermediate layers (transparency groups, soft masks, images).
RENDER_BASE_ADDRESS_SPACE = 512 * 2**20
RENDER_BYTES_PER_PIXEL = 16


def render_address_space(max_page_pixels: int) -> int:
    """The bytes the renderer child may map by default, for pages up to ``max_page_pixels``."""
    return RENDER_BASE_ADDRESS_SPACE + RENDER_BYTES_PER_PIXEL * max_page_pixels


@dataclass(frozen=True)
class PageLimits:
    max_pages: int
    max_page_pixels: int
    pdf_dpi: int
    # The long side over the short side (OCR_MAX_PAGE_ASPECT_RATIO).
    max_aspect_ratio: float
    # A page's width once blla has scaled it to SEGMENTATION_HEIGHT (OCR_MAX_SEGMENTATION_WIDTH).
    max_segmentation_width: int
    # Time reading one document's structure may take (OCR_DOCUMENT_OPEN_TIMEOUT_S).
    open_timeout_s: float
    # Time rendering one PDF page may take (OCR_PDF_RENDER_TIMEOUT_S).
    render_timeout_s: float = PDF_RENDER_TIMEOUT_S
    # Bytes the PDF renderer child may map (OCR_PDF_RENDER_MEMORY_MB); None: no limit.
    render_address_space: int | None = None

    def check_shape(self, page: int, width: float, height: float) -> None:
        """Refuse a page that has no usable size or that blla cannot segment sensibly.

        ``width`` and ``height`` are those of the upright page, in pixels or (for a PDF) points:
        both limits depend on the ratio only.
        """
        if not (math.isfinite(width) and math.isfinite(height) and width >= 1 and height >= 1):
            raise AppError(
                ErrorCode.CORRUPT_DOCUMENT,
                f"Page {page} has no usable size ({width:g}×{height:g}); the document is damaged.",
                details={"page": page},
            )
        # Exact arithmetic (a float's Fraction is its exact value), so a page exactly at a limit passes.
        w, h, ratio = Fraction(width), Fraction(height), Fraction(self.max_aspect_ratio)
        if h > ratio * w or w > ratio * h or math.ceil(w * SEGMENTATION_HEIGHT / h) > self.max_segmentation_width:
            widest = min(self.max_aspect_ratio, self.max_segmentation_width / SEGMENTATION_HEIGHT)
            raise AppError(
                ErrorCode.PAGE_SHAPE_UNSUPPORTED,
                f"Page {page} is {width:g}×{height:g} (width to height {width / height:.3g}:1); pages from "
                f"1:{self.max_aspect_ratio:g} (tall) to {widest:.3g}:1 (wide) can be segmented. "
                "Cut long strips or panoramas into pages.",
                details={"page": page, "width": width, "height": height},
            )

    def check_pixels(self, page: int, width: int, height: int) -> None:
        if width * height > self.max_page_pixels:
            raise AppError(
                ErrorCode.PAGE_TOO_LARGE,
                f"Page {page} has {width}×{height} pixels; "
                f"at most {self.max_page_pixels:,} pixels per page are accepted.",
                details={"page": page, "width": width, "height": height},
            )
