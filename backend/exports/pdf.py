"""The searchable PDF export of one document: its pages' images under their lines' invisible text
(the builder: backend/transcripts/pdf.py).

An original JPEG goes in as it is stored (its EXIF orientation applied by the PDF's placement,
not by re-encoding); every other page is drawn upright as the other exports draw it (PDF pages
in the page renderers' child processes). A page the backend cannot draw (too complex, damaged,
too large) keeps its text on a white page rather than failing the whole download. pdfium writes
the finished PDF at once, so it is written into a temporary file first and then sent on in
chunks: memory holds one page image and one chunk, never the document.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from PIL import ExifTags, Image

from backend.documents.inspect import JPEG, PDF, PILLOW_FORMATS
from backend.documents.pages import seekable_stored
from backend.documents.render import render_ocr_page
from backend.errors import AppError, ErrorCode
from backend.exports.drawing import Original, PageDrawing
from backend.exports.formats import DocumentExport, Writable
from backend.transcripts.model import TranscriptPage
from backend.transcripts.pdf import JpegOriginal, PageArt, write_searchable_pdf

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/pdf"
_CHUNK = 256 * 1024
# An image without a plausible resolution of its own is taken as scanned at this many dpi.
_DEFAULT_DPI = 300.0
_PLAUSIBLE_DPI = (50.0, 2400.0)
# What the backend's renderer refuses for one page (see backend/documents/render.py).
_UNDRAWABLE = frozenset({ErrorCode.DOCUMENT_TOO_COMPLEX, ErrorCode.CORRUPT_DOCUMENT, ErrorCode.PAGE_TOO_LARGE})


def _image_facts(source: BinaryIO, media_type: str) -> tuple[float, JpegOriginal | None]:
    """The image's dpi, and the original itself where it can go into the PDF as it is: a
    single-frame JPEG in grey or RGB (pdfium embeds those as stored; CMYK JPEGs are drawn)."""
    source.seek(0)
    with Image.open(source, formats=[PILLOW_FORMATS[media_type]]) as image:
        dpi = float(image.info.get("dpi", (0, 0))[0] or 0)
        if not _PLAUSIBLE_DPI[0] <= dpi <= _PLAUSIBLE_DPI[1]:
            dpi = _DEFAULT_DPI
        if media_type != JPEG or image.mode not in ("L", "RGB") or getattr(image, "n_frames", 1) != 1:
            return dpi, None
        orientation = int(image.getexif().get(ExifTags.Base.Orientation, 1))
    return dpi, JpegOriginal(source, orientation if 1 <= orientation <= 8 else 1)


def page_art(
    drawing: PageDrawing, original: Original, pages: tuple[TranscriptPage, ...]
) -> Iterator[tuple[TranscriptPage, PageArt]]:
    """Each page with what it shows; a drawn image is closed as the caller asks for the next page."""
    with seekable_stored(drawing.storage, original.storage_key) as source:
        if original.media_type == PDF:
            dpi, as_stored = float(drawing.limits.ocr_pdf_dpi), None
        else:
            dpi, as_stored = _image_facts(source, original.media_type)
        for page in pages:
            if as_stored is not None:
                yield page, PageArt(as_stored, dpi)
                continue
            try:
                image = render_ocr_page(source, original.media_type, page.number, drawing.limits, drawing.renderers)
            except AppError as exc:
                if exc.code not in _UNDRAWABLE:
                    raise
                log.warning("PDF export: page %d drawn without its image: %s", page.number, exc.message)
                yield page, PageArt(None, dpi)
                continue
            try:
                yield page, PageArt(image, dpi)
            finally:
                image.close()


def write_pdf(export: DocumentExport, out: Writable) -> Iterator[None]:
    """The document as a searchable PDF into ``out``; yields while the PDF is sent on."""
    with tempfile.TemporaryFile() as built:
        write_searchable_pdf(
            export.transcript, page_art(export.drawing, export.original, export.transcript.pages), built
        )
        yield
        built.seek(0)
        while chunk := built.read(_CHUNK):
            out.write(chunk)
            yield
