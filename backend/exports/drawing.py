"""The page images of an export, one at a time, at exactly the pixels the lines are in.

A page whose original is already that image (a single-frame JPEG or PNG of the page's recorded
size that needs no EXIF turn) goes out as the original's own bytes; every other page as a
lossless PNG of the upright page, PDF pages drawn in the page renderers' child processes (their
time and memory limits, as for people). One decoded page is held at a time.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import IO, BinaryIO

from PIL import ExifTags, Image

from backend.documents.inspect import JPEG, PNG
from backend.documents.pages import seekable_stored
from backend.documents.render import PdfRenderers, RenderLimits, fitted, render_ocr_page
from backend.storage import Storage
from backend.transcripts.model import TranscriptPage

log = logging.getLogger(__name__)

_EXTENSIONS = {JPEG: "jpg", PNG: "png"}
# Lossless at every level; 1 is about 4x faster than the default for some 20 % more bytes.
_PNG_LEVEL = 1
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Original:
    """The stored original a document's pages come from."""

    storage_key: str
    media_type: str
    page_count: int


@dataclass(frozen=True)
class PageDrawing:
    """What drawing pages needs: the originals' store and the renderers with their limits."""

    storage: Storage
    limits: RenderLimits
    renderers: PdfRenderers


def image_stem(number: int) -> str:
    """Page ``number``'s image file name without extension (``0001``): sorts in page order."""
    return f"{number:04d}"


class PageFile:
    """One page's image as it goes into a ZIP; ``page`` names it (``image_name``)."""

    def __init__(self, page: TranscriptPage, source: BinaryIO, image: Image.Image | None) -> None:
        self.page = page
        self._source = source
        self._image = image

    def write(self, out: IO[bytes]) -> None:
        if self._image is None:
            self._source.seek(0)
            shutil.copyfileobj(self._source, out, _CHUNK)
        else:
            self._image.save(out, "PNG", compress_level=_PNG_LEVEL)


def _reusable(source: BinaryIO, original: Original, page: TranscriptPage) -> str | None:
    """The original's extension where its bytes are exactly the page's image, else None."""
    extension = _EXTENSIONS.get(original.media_type)
    if extension is None or original.page_count != 1:
        return None
    source.seek(0)
    with Image.open(source) as image:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation != 1 or image.size != (page.width, page.height) or getattr(image, "n_frames", 1) != 1:
            return None
    return extension


def page_files(drawing: PageDrawing, original: Original, pages: tuple[TranscriptPage, ...]) -> Iterator[PageFile]:
    """Each page's image file in turn; its ``page`` carries the file's name. The image is closed
    as the caller asks for the next page."""
    with seekable_stored(drawing.storage, original.storage_key) as source:
        for page in pages:
            extension = _reusable(source, original, page)
            if extension is not None:
                yield PageFile(replace(page, image_name=f"{image_stem(page.number)}.{extension}"), source, None)
                continue
            image = _drawn(source, original, page, drawing)
            try:
                yield PageFile(replace(page, image_name=f"{image_stem(page.number)}.png"), source, image)
            finally:
                image.close()


def page_images(
    drawing: PageDrawing, original: Original, pages: tuple[TranscriptPage, ...]
) -> Iterator[tuple[TranscriptPage, Image.Image]]:
    """Each page upright at its recorded size (RGB or grey), closed as the caller asks for the next."""
    with seekable_stored(drawing.storage, original.storage_key) as source:
        for page in pages:
            image = _drawn(source, original, page, drawing)
            try:
                yield page, image
            finally:
                image.close()


def _drawn(source: BinaryIO, original: Original, page: TranscriptPage, drawing: PageDrawing) -> Image.Image:
    image = render_ocr_page(source, original.media_type, page.number, drawing.limits, drawing.renderers)
    return fitted(image, (page.width, page.height), page.number)
