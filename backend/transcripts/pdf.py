"""A searchable PDF: each page's image with its lines as invisible text laid over them.

Built with pdfium (pypdfium2, already the backend's PDF engine): image and text objects
through its editing API, never bytes by hand. The text layer's font is made for each
document with fontTools: one blank box glyph per character the document's lines use, each
of the same width. The text is never drawn (render mode 3, as OCR software writes its
layers), so only the font's character map matters: every character gets its own glyph, and
pdfium writes a ToUnicode map from it, so a viewer's search and copy give back exactly the
line's characters (ſ, ꝛ, combining marks, Hebrew) — no packaged font covers all of them.

Each line's text is stretched along its baseline (first to last point: rotated where the
line is) and sized to its polygon's height, so a selection lands on the handwriting.

Memory stays bounded whatever the page count: a page's image is written to a spooled
temporary file as JPEG before the next page is read, and pdfium keeps only a window onto
that file (``FPDFImageObj_LoadJpegFile``, not inline); the images are read back one at a
time while pdfium writes the PDF into ``out``. An original JPEG is copied as it is (no
re-encoding; its EXIF orientation becomes the image's placement), any other page image is
encoded as JPEG at quality 90: lossless (Flate) pages would have to be held in pdfium's
memory, and a 300 dpi scan is 5-25 MB as PNG against 1-2 MB as JPEG. The archive keeps the
lossless original; the PDF is a reading copy.
"""

from __future__ import annotations

import ctypes
import io
import math
import shutil
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import pypdfium2
import pypdfium2.raw as pdfium_c
from bidi import get_display
from fontTools.fontBuilder import FontBuilder
from fontTools.pens.ttGlyphPen import TTGlyphPen
from PIL import Image

from backend.documents.inspect import PDFIUM_LOCK
from backend.errors import AppError, ErrorCode
from backend.transcripts.model import Point, TranscriptDocument, TranscriptLine, TranscriptPage

# The text layer's font, in font units: every glyph is a box of the same advance.
_UNITS_PER_EM = 1000
_ADVANCE = 500
_ASCENT, _DESCENT = 800, -200
_ASCENT_SHARE = _ASCENT / (_ASCENT - _DESCENT)
# JPEG quality of page images that are not JPEG originals (above: why JPEG).
_JPEG_QUALITY = 90
_POINTS_PER_INCH = 72.0
# A line's text is at least this high (points): pdfium drops text it cannot size.
_MIN_FONT_SIZE = 0.5
_CHUNK = 1024 * 1024
_WHITESPACE = frozenset({"Zs", "Zl", "Zp"})
# Right-to-left classes of the Unicode bidirectional algorithm.
_RTL = frozenset({"R", "AL", "AN"})


@dataclass(frozen=True)
class JpegOriginal:
    """An original JPEG, embedded as it is stored."""

    source: BinaryIO  # the file, read from its start
    orientation: int = 1  # its EXIF orientation (1-8): how its stored pixels are turned upright


@dataclass(frozen=True)
class PageArt:
    """What a page shows under its text: the upright image (any pixel size: it covers the whole
    page), an original JPEG, or None (a page that cannot be drawn: its text alone, on white)."""

    picture: Image.Image | JpegOriginal | None
    # The page's pixels per inch: a page of ``TranscriptPage.width`` pixels is width/dpi inches wide.
    dpi: float


def layer_text(text: str) -> str:
    """The characters a line's text layer holds, in logical order: line breaks and runs of
    white space become one space (viewers collapse them anyway), control characters and
    characters outside the Basic Multilingual Plane are left out (pdfium maps no character
    beyond U+FFFF through the font)."""
    kept: list[str] = []
    for char in text:
        category = unicodedata.category(char)
        if category in _WHITESPACE or char in "\t\n\r":
            if kept and kept[-1] != " ":
                kept.append(" ")
        elif category not in ("Cc", "Cs") and ord(char) <= 0xFFFF:
            kept.append(char)
    return "".join(kept).strip()


def _visual(text: str) -> str:
    """The characters in the order they stand on the page, left to right, as a PDF holds them
    (a viewer turns right-to-left runs back into reading order when it extracts)."""
    if not any(unicodedata.bidirectional(char) in _RTL for char in text):
        return text
    # Reordered only: a bracket stays the character it is (python-bidi's get_display does not
    # mirror), its mirrored look would be the glyph's business.
    return str(get_display(text))


def _text_font(chars: Iterable[str]) -> bytes:
    """A TrueType font with one blank box glyph for each of ``chars`` (all the same width)."""
    ordered = sorted(set(chars))
    names = [".notdef", *(f"uni{ord(char):04X}" for char in ordered)]
    pen = TTGlyphPen(None)
    pen.moveTo((0, _DESCENT))
    pen.lineTo((0, _ASCENT))
    pen.lineTo((_ADVANCE, _ASCENT))
    pen.lineTo((_ADVANCE, _DESCENT))
    pen.closePath()
    box = pen.glyph()
    builder = FontBuilder(_UNITS_PER_EM, isTTF=True)
    builder.setupGlyphOrder(names)
    builder.setupCharacterMap({ord(char): name for char, name in zip(ordered, names[1:], strict=True)})
    builder.setupGlyf(dict.fromkeys(names, box))
    builder.setupHorizontalMetrics(dict.fromkeys(names, (_ADVANCE, 0)))
    builder.setupHorizontalHeader(ascent=_ASCENT, descent=_DESCENT)
    builder.setupNameTable({"familyName": "Transcript", "styleName": "Regular"})
    builder.setupOS2(
        sTypoAscender=_ASCENT, sTypoDescender=_DESCENT, usWinAscent=_ASCENT, usWinDescent=-_DESCENT, fsType=0
    )
    builder.setupPost()
    data = io.BytesIO()
    builder.save(data)
    return data.getvalue()


# --- where a line's text goes ------------------------------------------------------------------


@dataclass(frozen=True)
class _Placement:
    """A text object's matrix (text space to page points) and font size."""

    matrix: tuple[float, float, float, float, float, float]
    font_size: float


def _box(points: Sequence[tuple[float, float]]) -> tuple[float, float, float, float]:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def _placement(line: TranscriptLine, chars: int, page_height: int, scale: float) -> _Placement | None:
    """Where ``chars`` characters of ``line`` go on a page ``page_height`` pixels high, at
    ``scale`` points per pixel: along the baseline's first to last point, as high as the
    polygon reaches on either side of it; a line without a usable baseline takes its polygon's
    box. None: the line has no extent to lay text on."""

    def to_points(point: Point) -> tuple[float, float]:
        # Pixels run down from the top, PDF points up from the bottom.
        return point[0] * scale, (page_height - point[1]) * scale

    baseline = [to_points(p) for p in line.baseline]
    polygon = [to_points(p) for p in line.polygon]
    start = end = None
    if len(baseline) >= 2 and math.dist(baseline[0], baseline[-1]) > 0:
        start, end = baseline[0], baseline[-1]
    length = math.dist(start, end) if start and end else 0.0
    if start and end:
        ux, uy = (end[0] - start[0]) / length, (end[1] - start[1]) / length
        nx, ny = -uy, ux  # a quarter turn counter-clockwise: "up" from the baseline
        offsets = [(x - start[0]) * nx + (y - start[1]) * ny for x, y in polygon]
        above = max([0.0, *offsets])
        below = max([0.0, *(-offset for offset in offsets)])
        if above + below <= 0:
            # No polygon to size by: as high as a character of the line is wide, times two.
            above = min(2 * length / chars, page_height * scale / 10) * _ASCENT_SHARE
            below = above * (1 - _ASCENT_SHARE) / _ASCENT_SHARE
    elif len(polygon) >= 2:
        left, bottom, right, top = _box(polygon)
        if right <= left or top <= bottom:
            return None
        height = top - bottom
        start = (left, bottom + height * (1 - _ASCENT_SHARE))
        length = right - left
        ux, uy, nx, ny = 1.0, 0.0, 0.0, 1.0
        above, below = height * _ASCENT_SHARE, height * (1 - _ASCENT_SHARE)
    else:
        return None
    font_size = max(above + below, _MIN_FONT_SIZE)
    # The font's box reaches DESCENT below its origin: the origin goes where that meets the polygon.
    lift = font_size * (1 - _ASCENT_SHARE) - below
    origin = (start[0] + nx * lift, start[1] + ny * lift)
    stretch = length / (chars * font_size * _ADVANCE / _UNITS_PER_EM)
    return _Placement(
        matrix=(stretch * ux, stretch * uy, -uy, ux, origin[0], origin[1]),
        font_size=font_size,
    )


# --- where a page's image goes ----------------------------------------------------------------


def _upright(orientation: int, u: float, v: float) -> tuple[float, float]:
    """Where the stored image's point (u, v) (0-1, from the top left) stands once upright
    (EXIF orientation ``orientation``, as Pillow's ``exif_transpose`` turns it)."""
    return {
        2: (1 - u, v),
        3: (1 - u, 1 - v),
        4: (u, 1 - v),
        5: (v, u),
        6: (1 - v, u),
        7: (1 - v, 1 - u),
        8: (v, 1 - u),
    }.get(orientation, (u, v))


def _image_matrix(orientation: int, width: float, height: float) -> pypdfium2.PdfMatrix:
    """The image's matrix: its unit square (the stored image; y up) onto the upright page."""

    def at(x: float, y: float) -> tuple[float, float]:
        u, v = _upright(orientation, x, 1 - y)
        return u * width, (1 - v) * height

    origin, right, up = at(0, 0), at(1, 0), at(0, 1)
    return pypdfium2.PdfMatrix(
        right[0] - origin[0], right[1] - origin[1], up[0] - origin[0], up[1] - origin[1], origin[0], origin[1]
    )


class _Window(io.RawIOBase):
    """Bytes ``start`` to ``start + length`` of a shared file, as a file of their own (pdfium
    reads each page's JPEG through one; they share a single open file)."""

    def __init__(self, file: BinaryIO, start: int, length: int) -> None:
        super().__init__()
        self._file, self._start, self._length, self._position = file, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = max(0, min(len(view), self._length - self._position))
        self._file.seek(self._start + self._position)
        data = self._file.read(wanted)
        view[: len(data)] = data
        self._position += len(data)
        return len(data)


@contextmanager
def _pdfium(subject: str) -> Iterator[None]:
    with PDFIUM_LOCK:
        try:
            yield
        except pypdfium2.PdfiumError as exc:
            raise AppError(ErrorCode.CORRUPT_DOCUMENT, f"{subject} could not be written into the PDF.") from exc


class _PdfWriter:
    """One searchable PDF being built: pages appended one by one, then written out."""

    def __init__(self, document: TranscriptDocument, spool: BinaryIO) -> None:
        self._spool = spool
        chars = {char for page in document.pages for line in page.lines for char in layer_text(line.text)}
        font = _text_font(chars)
        # pdfium reads the font from this buffer while saving: it lives as long as the writer.
        self._font_data = (ctypes.c_uint8 * len(font)).from_buffer_copy(font)
        with _pdfium("The text layer's font"):
            self._pdf = pypdfium2.PdfDocument.new()
            self._font = pdfium_c.FPDFText_LoadFont(
                self._pdf, self._font_data, len(font), pdfium_c.FPDF_FONT_TRUETYPE, True
            )
            if not self._font:
                raise pypdfium2.PdfiumError("pdfium refused the text layer's font")

    def add_page(self, page: TranscriptPage, art: PageArt) -> None:
        scale = _POINTS_PER_INCH / art.dpi
        # pdfium makes no page without an extent.
        width, height = max(page.width * scale, 1.0), max(page.height * scale, 1.0)
        jpeg = self._spool_jpeg(art.picture)
        with _pdfium(f"Page {page.number}"):
            pdf_page = self._pdf.new_page(width, height)
            try:
                if jpeg is not None:
                    window, orientation = jpeg
                    image = pypdfium2.PdfImage.new(self._pdf)
                    image.load_jpeg(window, inline=False, autoclose=False)
                    image.set_matrix(_image_matrix(orientation, width, height))
                    pdf_page.insert_obj(image)
                for line in page.lines:
                    self._add_line(pdf_page, line, page.height, scale)
                pdf_page.gen_content()
            finally:
                pdf_page.close()

    def _spool_jpeg(self, picture: Image.Image | JpegOriginal | None) -> tuple[_Window, int] | None:
        """The page's JPEG appended to the spool (outside pdfium's lock: encoding takes a while)."""
        if picture is None:
            return None
        self._spool.seek(0, io.SEEK_END)
        start = self._spool.tell()
        if isinstance(picture, JpegOriginal):
            picture.source.seek(0)
            shutil.copyfileobj(picture.source, self._spool, _CHUNK)
            orientation = picture.orientation
        else:
            image = picture if picture.mode in ("L", "RGB") else picture.convert("RGB")
            image.save(self._spool, "JPEG", quality=_JPEG_QUALITY)
            orientation = 1
        return _Window(self._spool, start, self._spool.tell() - start), orientation

    def _add_line(self, pdf_page: pypdfium2.PdfPage, line: TranscriptLine, page_height: int, scale: float) -> None:
        text = layer_text(line.text)
        if not text:
            return
        where = _placement(line, len(text), page_height, scale)
        if where is None:
            return
        obj = pdfium_c.FPDFPageObj_CreateTextObj(self._pdf, self._font, ctypes.c_float(where.font_size))
        if not obj:
            raise pypdfium2.PdfiumError("pdfium could not make a text object")
        inserted = False
        try:
            wide = ctypes.create_string_buffer((_visual(text) + "\0").encode("utf-16-le"))
            if not pdfium_c.FPDFText_SetText(obj, ctypes.cast(wide, ctypes.POINTER(pdfium_c.FPDF_WCHAR))):
                raise pypdfium2.PdfiumError("pdfium refused a line's text")
            pdfium_c.FPDFTextObj_SetTextRenderMode(obj, pdfium_c.FPDF_TEXTRENDERMODE_INVISIBLE)
            pdfium_c.FPDFPageObj_Transform(obj, *where.matrix)
            pdfium_c.FPDFPage_InsertObject(pdf_page.raw, obj)
            inserted = True  # the page owns it now
        finally:
            if not inserted:
                pdfium_c.FPDFPageObj_Destroy(obj)

    def save(self, out: BinaryIO) -> None:
        with _pdfium("The PDF"):
            self._pdf.save(out)

    def close(self) -> None:
        with PDFIUM_LOCK:
            pdfium_c.FPDFFont_Close(self._font)
            self._pdf.close()


def write_searchable_pdf(
    document: TranscriptDocument, pages: Iterable[tuple[TranscriptPage, PageArt]], out: BinaryIO
) -> None:
    """Write ``document`` as a searchable PDF into ``out``: one PDF page per item of ``pages``
    (taken one at a time; an image may be closed once the next page is asked for), its
    picture under its lines' invisible text."""
    # On disk from the first byte: a page image is already a megabyte or more.
    with tempfile.TemporaryFile() as spool:
        writer = _PdfWriter(document, cast(BinaryIO, spool))
        try:
            for page, art in pages:
                writer.add_page(page, art)
            writer.save(out)
        finally:
            writer.close()
