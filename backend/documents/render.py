"""Page images from an original: the page's size as the OCR service sees it, and the images people see.

Every decoder call on a stored original for the UI is here. Work is bounded before any
pixel is decoded: a PDF page is rendered straight at the display size (never at full
resolution first), an image's pixel count is read from its header and checked against
``max_pixels``, and a JPEG is decoded at the smallest scale that still covers the display
size. A failure inside a decoder is the original's fault (422 ``CORRUPT_DOCUMENT``), logged
with its traceback so a bug of ours stays visible.

Coordinates: the OCR service reads a PDF page rendered at ``OCR_PDF_DPI`` (a page over
``OCR_MAX_PAGE_PIXELS`` at the largest DPI that fits) and an image at its own pixels, upright
after its EXIF orientation; the lines' baselines and polygons are in those pixels.
:func:`ocr_sizes` computes the same sizes (the rule of ``ocr_service/pdf_pages.py`` and
``image_pages.py``), so the UI can lay a page's lines over its image, whatever size that is.
"""

from __future__ import annotations

import io
import logging
import math
import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import pypdfium2
from PIL import ExifTags, Image, ImageOps, TiffImagePlugin

from backend.documents.inspect import JPEG, PDF, PDFIUM_LOCK, PILLOW_FORMATS
from backend.errors import AppError, ErrorCode
from ocr_service.errors import AppError as OcrServiceError
from ocr_service.errors import ErrorCode as OcrServiceCode
from ocr_service.pdf_render import PdfRenderer

log = logging.getLogger(__name__)

# EXIF orientations 5-8 store the page turned by a quarter: its upright width is the stored height.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
# Grey of more than 8 bits a level (16-bit scans): Pillow's modes for it.
_WIDE_GREY = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})

MEDIA_TYPE = "image/webp"
# WebP at quality 80 is about half the bytes of a JPEG of the same look for a scanned letter
# (85 KB against 174 KB for an A4 page at 150 dpi), every current browser shows it, and a
# page is encoded once (0.3 s) and then served from the cache many times.
_WEBP_QUALITY, _WEBP_METHOD = 80, 4
# A WebP image has at most this many pixels on a side.
WEBP_MAX_SIDE = 16383


@dataclass(frozen=True)
class RenderLimits:
    display_dpi: int
    max_side: int
    thumbnail_side: int
    max_pixels: int
    # Mirrors of the OCR service's OCR_PDF_DPI and OCR_MAX_PAGE_PIXELS (coordinates, above).
    ocr_pdf_dpi: int
    ocr_max_page_pixels: int
    # A PDF page is rendered in a child process killed past this time, mapping at most this
    # many bytes (None: no limit); either way the page is 422 DOCUMENT_TOO_COMPLEX.
    pdf_render_timeout_s: float = 30.0
    pdf_render_address_space: int | None = None


@dataclass(frozen=True)
class RenderedPage:
    width: int  # the page in the OCR's pixels (the space of its lines' coordinates)
    height: int
    image: bytes  # WebP, long side at most max_side
    thumbnail: bytes  # WebP, long side at most thumbnail_side


@contextmanager
def _decoding(subject: str) -> Iterator[None]:
    try:
        yield
    except AppError:
        raise
    except Image.DecompressionBombError as exc:
        raise AppError(ErrorCode.PAGE_TOO_LARGE, f"{subject} has too many pixels to be shown.") from exc
    except Exception as exc:
        log.warning("could not render %s", subject.lower(), exc_info=True)
        raise AppError(ErrorCode.CORRUPT_DOCUMENT, f"{subject} is damaged or not readable.") from exc


def _page_points(size: tuple[float, float], number: int) -> tuple[float, float]:
    width, height = size
    if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
        raise AppError(ErrorCode.CORRUPT_DOCUMENT, f"Page {number} has no usable size; the document is damaged.")
    return width, height


def _ocr_pdf_scale(width_pt: float, height_pt: float, limits: RenderLimits) -> float:
    """The scale the OCR service renders a PDF page at (ocr_service/pdf_pages.py, ``_scale``)."""
    scale = limits.ocr_pdf_dpi / 72
    if width_pt * scale * height_pt * scale > limits.ocr_max_page_pixels:
        scale *= math.sqrt(limits.ocr_max_page_pixels / (width_pt * scale * height_pt * scale))
        while math.ceil(width_pt * scale) * math.ceil(height_pt * scale) > limits.ocr_max_page_pixels:
            scale *= 0.995
    return scale


def _ocr_pdf_size(width_pt: float, height_pt: float, limits: RenderLimits) -> tuple[int, int]:
    """The pixels the OCR service renders a PDF page to (pdfium rounds each side up)."""
    scale = _ocr_pdf_scale(width_pt, height_pt, limits)
    return math.ceil(width_pt * scale), math.ceil(height_pt * scale)


def _upright_size(image: Image.Image) -> tuple[int, int]:
    """The selected frame's size from its header, turned as its EXIF says (ocr_service/image_pages.py)."""
    width, height = image.size
    orientation = image.getexif().get(ExifTags.Base.Orientation)
    # Pillow turns a TIFF frame itself as it loads it and reports the upright size already.
    reported_upright = (
        isinstance(image, TiffImagePlugin.TiffImageFile)
        and image.tag_v2.get(ExifTags.Base.Orientation) in _QUARTER_TURNS
    )
    if orientation in _QUARTER_TURNS and not reported_upright:
        return height, width
    return width, height


def ocr_sizes(source: BinaryIO, media_type: str, limits: RenderLimits) -> list[tuple[int, int]]:
    """Every page's size in the OCR's pixels, from headers only (no page is rendered or decoded)."""
    source.seek(0)
    if media_type == PDF:
        with _decoding("The PDF"), PDFIUM_LOCK:
            pdf = pypdfium2.PdfDocument(source)
            try:
                points = [pdf.get_page_size(index) for index in range(len(pdf))]
            finally:
                pdf.close()
        return [_ocr_pdf_size(*_page_points(size, n), limits) for n, size in enumerate(points, start=1)]
    sizes: list[tuple[int, int]] = []
    with _decoding("The image"), Image.open(source, formats=[PILLOW_FORMATS[media_type]]) as image:
        for index in range(int(getattr(image, "n_frames", 1))):
            image.seek(index)
            sizes.append(_upright_size(image))
    return sizes


def _fit(width: float, height: float, side: int) -> float:
    """The scale that brings the long side down to ``side`` (never up)."""
    return min(1.0, side / max(width, height))


class PdfRenderers:
    """Children that render PDF pages, ``count`` pages at once: the OCR service's ``PdfRenderer``
    (ocr_service/pdf_render.py; pypdfium2 only, no torch), each with its own child process.

    pdfium cannot be interrupted inside one page object, and a thread cannot be stopped: a
    hostile 4 KB page renders for hours and grows by 500 MB a second. In a child, a page past
    ``timeout_s`` has its child killed, and one past ``address_space`` (RLIMIT_AS) ends it; the
    page is 422 ``DOCUMENT_TOO_COMPLEX`` and the next render starts a fresh child. Children start
    on first use and end with :meth:`close` (or with this process: they watch the pipe).
    """

    def __init__(self, count: int, timeout_s: float, address_space: int | None) -> None:
        self._timeout_s = timeout_s
        self._all = [PdfRenderer(address_space=address_space) for _ in range(count)]
        self._idle: queue.SimpleQueue[PdfRenderer] = queue.SimpleQueue()
        for renderer in self._all:
            self._idle.put(renderer)

    def render(self, source: BinaryIO, number: int, scale: float) -> Image.Image:
        """Page ``number`` (from 1) of the PDF ``source`` at ``scale``; waits for a free child."""
        renderer = self._idle.get()
        try:
            key = renderer.add(source)
            try:
                return renderer.render(key, number - 1, scale, self._timeout_s)
            except OcrServiceError as exc:
                raise _refused(exc, number) from exc
            finally:
                renderer.remove(key)
        finally:
            self._idle.put(renderer)

    @property
    def children_started(self) -> int:
        """Child processes started so far (a killed child is replaced by a new one)."""
        return sum(renderer.children_started for renderer in self._all)

    def close(self) -> None:
        for renderer in self._all:
            renderer.close()


def _refused(exc: OcrServiceError, number: int) -> AppError:
    """The renderer's refusal in the backend's words (its own speak of the OCR service)."""
    if exc.code is OcrServiceCode.DOCUMENT_TOO_COMPLEX:
        details = dict(exc.details or {"page": number})
        if "limitSeconds" in details:
            reason = f"took longer than {details['limitSeconds']:g} s to render"
        else:
            reason = "needs more memory to render than a page may take"
        return AppError(
            ErrorCode.DOCUMENT_TOO_COMPLEX,
            f"Page {number} of the PDF {reason}; it is too complex to be shown. Trying again will not help.",
            details=details,
        )
    if exc.code is OcrServiceCode.MODELS_NOT_READY:  # the renderers are being closed: we are stopping
        return AppError(
            ErrorCode.SHUTTING_DOWN,
            "The backend is stopping; the page was not rendered. Please try again shortly.",
            headers={"Retry-After": "10"},
        )
    return AppError(ErrorCode.CORRUPT_DOCUMENT, f"Page {number} of the PDF is damaged or not readable.")


def _render_pdf(
    source: BinaryIO, number: int, scale_of: Callable[[float, float], float], renderers: PdfRenderers
) -> tuple[tuple[float, float], Image.Image]:
    """Page ``number`` rendered at ``scale_of(width_pt, height_pt)``, and its size in points.
    The size is read here (the page's header); the page itself is drawn in a child."""
    with _decoding(f"Page {number} of the PDF"), PDFIUM_LOCK:
        pdf = pypdfium2.PdfDocument(source)
        try:
            width_pt, height_pt = _page_points(pdf.get_page_size(number - 1), number)
        finally:
            pdf.close()
    source.seek(0)
    image = renderers.render(source, number, scale_of(width_pt, height_pt)).convert("RGB")
    return (width_pt, height_pt), image


def _eight_bit_grey(image: Image.Image) -> Image.Image:
    """Wide grey levels scaled to 8 bits as the OCR service does (ocr_service/image_pages.py):
    Pillow's own conversion clips every level over 255 to white, so a 16-bit scan (paper at
    60 000, ink at 10 000) would be a blank page, shown and trained on as one."""
    wide = image.convert("I")
    top = wide.getextrema()[1]
    assert isinstance(top, int)  # one band of integers
    scale = 1 / 256 if top <= 0xFFFF else 255 / top
    return wide.point(lambda v: v * scale).convert("L")


def _flatten(image: Image.Image) -> Image.Image:
    """RGB or grey; a transparent page is laid on white (as a viewer shows it), not on black."""
    if image.mode in ("RGB", "L"):
        return image
    if image.mode in _WIDE_GREY:
        return _eight_bit_grey(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _render_image(
    source: BinaryIO, media_type: str, number: int, max_pixels: int, draft_side: int | None
) -> tuple[tuple[int, int], Image.Image]:
    """Frame ``number`` upright; ``draft_side``: a JPEG may be decoded smaller, down to this long side."""
    subject = f"Page {number} of the image"
    with _decoding(subject), Image.open(source, formats=[PILLOW_FORMATS[media_type]]) as image:
        image.seek(number - 1)
        size = _upright_size(image)
        if size[0] * size[1] > max_pixels:
            raise AppError(
                ErrorCode.PAGE_TOO_LARGE,
                f"{subject} has {size[0]}×{size[1]} pixels; pages of at most {max_pixels:,} pixels are accepted.",
            )
        if media_type == JPEG and draft_side is not None:
            # Decode at 1/2, 1/4 or 1/8 where that still covers the display size: a 24-megapixel
            # photo then costs a fraction of its full decode.
            scale = _fit(*image.size, draft_side)
            image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
        upright = _flatten(ImageOps.exif_transpose(image))
        upright.load()
    return size, upright


def render_page(
    source: BinaryIO, media_type: str, number: int, limits: RenderLimits, renderers: PdfRenderers
) -> RenderedPage:
    """Page ``number`` (from 1) as a display image and a thumbnail; ``source`` must be seekable."""
    source.seek(0)
    if media_type == PDF:
        points, image = _render_pdf(
            source, number, lambda w, h: min(limits.display_dpi / 72, limits.max_side / max(w, h)), renderers
        )
        size = _ocr_pdf_size(*points, limits)
    else:
        size, image = _render_image(source, media_type, number, limits.max_pixels, limits.max_side)
    return RenderedPage(
        width=size[0],
        height=size[1],
        image=_encode(image, limits.max_side),
        thumbnail=_encode(image, limits.thumbnail_side),
    )


def render_ocr_page(
    source: BinaryIO, media_type: str, number: int, limits: RenderLimits, renderers: PdfRenderers
) -> Image.Image:
    """Page ``number`` (from 1) upright at the OCR's pixels (RGB or grey): the image its lines'
    coordinates fit, as training data needs it. Never larger than ``ocr_max_page_pixels``
    (the OCR service reads no larger page). ``source`` must be seekable."""
    source.seek(0)
    if media_type == PDF:
        _, image = _render_pdf(source, number, lambda w, h: _ocr_pdf_scale(w, h, limits), renderers)
        return image
    _, image = _render_image(source, media_type, number, limits.ocr_max_page_pixels, None)
    return image


def fitted(image: Image.Image, size: tuple[int, int], number: int) -> Image.Image:
    """Page ``number``'s rendered ``image`` at exactly ``size``, the page's recorded size (the
    pixels its lines' coordinates are in), as training data and exports need it. A new image
    replaces (and closes) ``image`` only where the sizes differ."""
    if image.size == size:
        return image
    # The OCR service read the page at another size (its DPI setting differs from the backend's
    # mirror of it): the lines are in the recorded size, so the image follows.
    log.warning("page %d: rendered at %dx%d, its lines are in %dx%d; scaled to fit", number, *image.size, *size)
    try:
        return image.resize(size, Image.Resampling.LANCZOS)
    finally:
        image.close()


def _encode(image: Image.Image, side: int) -> bytes:
    scale = _fit(*image.size, side)
    if scale < 1:
        target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", quality=_WEBP_QUALITY, method=_WEBP_METHOD)
    return buffer.getvalue()
