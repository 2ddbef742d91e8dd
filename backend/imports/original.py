"""The imported document's original: one multi-page TIFF (deflate, lossless) of its page images.

Each page image is decoded on its own (one in memory at a time) and written upright as the
next frame, without an orientation tag: the backend and the OCR service read a frame's stored
pixels, so the page's size in the database is the frame's size and the lines land right.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from typing import BinaryIO

from PIL import ExifTags, Image, ImageOps, TiffImagePlugin

from backend.errors import AppError, ErrorCode

log = logging.getLogger(__name__)

FORMATS = ("PNG", "JPEG", "TIFF", "WEBP", "BMP")
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
# Modes a deflate TIFF holds as they are; the rest are converted without losing what a page shows.
_KEPT = frozenset({"1", "L", "RGB", "I;16", "I;16L", "I;16B", "I"})
_FLATTENED = {"LA": "L", "PA": "RGB", "RGBA": "RGB", "La": "L", "RGBa": "RGB"}


@dataclass(frozen=True)
class Frame:
    """A written frame's size, and the size of the image as the XML's coordinates saw it."""

    width: int
    height: int


def _invalid(name: str, reason: str) -> AppError:
    return AppError(ErrorCode.IMPORT_IMAGE_INVALID, f"The image {name!r} {reason}.")


def _upright(image: Image.Image, declared: tuple[float, float]) -> Image.Image:
    """Turned as its EXIF says, unless the XML's page size is the stored, unturned one."""
    orientation = image.getexif().get(ExifTags.Base.Orientation)
    if orientation in (None, 1):
        return image
    stored = image.size
    if orientation in _QUARTER_TURNS and declared == (float(stored[0]), float(stored[1])):
        # The file's coordinates are in the stored pixels (the tool read the image unturned).
        return image
    turned = ImageOps.exif_transpose(image)
    return turned if turned is not None else image


def _flattened(image: Image.Image, name: str) -> Image.Image:
    if image.mode in _KEPT:
        return image
    if image.mode in _FLATTENED:
        # Transparency means nothing on paper: laid on white, as a viewer shows it.
        background = Image.new("RGBA", image.size, "white")
        background.alpha_composite(image.convert("RGBA"))
        return background.convert(_FLATTENED[image.mode])
    if image.mode in ("P", "CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB")
    raise _invalid(name, f"has pixels of a kind a page image does not ({image.mode})")


class TiffOriginal:
    """Appends page images to a multi-page TIFF in ``out`` (a seekable file)."""

    def __init__(self, out: BinaryIO, max_pixels: int) -> None:
        self.out = out
        self.max_pixels = max_pixels
        self._writer: TiffImagePlugin.AppendingTiffWriter | None = TiffImagePlugin.AppendingTiffWriter(out, new=True)
        self.frames: list[Frame] = []

    def add(self, data: bytes, name: str, declared: tuple[float, float]) -> Frame:
        """Decode ``data`` (the image ``name``) and append it; ``declared``: the XML's page size."""
        writer = self._writer
        if writer is None:
            raise ValueError("the TIFF is closed")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                    width, height = image.size
                    if width * height > self.max_pixels:
                        raise _invalid(name, f"has {width} x {height} pixels; a page may have {self.max_pixels}")
                    image.load()
                    page = _flattened(_upright(image, declared), name)
                    page.save(writer, format="TIFF", compression="tiff_adobe_deflate")
        except AppError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _invalid(name, "has too many pixels") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            # Pillow's decoders raise these for damaged or unknown bytes: the client's fault.
            log.info("an imported image %r could not be read: %s", name, exc)
            raise _invalid(name, "is damaged or not an image (PNG, JPEG, TIFF, WebP or BMP)") from exc
        writer.newFrame()
        frame = Frame(page.width, page.height)
        self.frames.append(frame)
        return frame

    def close(self) -> None:
        """Finish the file. ``out``'s position is undefined afterwards: releasing Pillow's writer
        moves it (libtiff writes through the file descriptor), so readers seek first."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
