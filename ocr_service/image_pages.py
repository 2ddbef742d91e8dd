"""The pages of an image file (one, or a multi-page TIFF's frames): checked from headers, decoded upright."""

from __future__ import annotations

import io
from typing import Any, BinaryIO, Literal

from PIL import ExifTags, Image, ImageOps, TiffImagePlugin

from ocr_service.decoding import ParseBudget, decoding
from ocr_service.page_limits import PageLimits

# The limit is checked by us before any pixel is decoded; PIL's own global guard would
# raise a DecompressionBombError with a less useful message (and only at 2x its limit).
Image.MAX_IMAGE_PIXELS = None

# EXIF orientations 5-8 store the page turned by a quarter: its upright width is the stored height.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
# Grey levels of 16 bits (a 16-bit PNG or TIFF scan) and of 32-bit integers.
_WIDE_GREY = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


class ImagePages:
    """The frames of one image file; ``fmt`` is the Pillow format the bytes were sniffed as."""

    exact_count = True

    def __init__(self, data: bytes | BinaryIO, fmt: str, limits: PageLimits, budget: ParseBudget) -> None:
        self.limits = limits
        self._budget = budget
        self._data, self._format = data, fmt
        # A TIFF's frames: where each one's directory (IFD) starts in the file.
        self._directories: list[int] = []
        with decoding("The image"):
            self._image = self._open()
        try:
            self.count = self._count_frames()
        except BaseException:
            self._image.close()
            raise

    def _count_frames(self) -> int:
        image = self._image
        if not isinstance(image, TiffImagePlugin.TiffImageFile):
            # PNG (APNG), WebP and JPEG (MPO) declare their frame count in a header read at open.
            with decoding("The image"):
                return int(getattr(image, "n_frames", 1))
        # Pillow's n_frames walks every IFD of a TIFF (30 000 frames: 12.5 s, growing faster
        # than the count); the frames past the page limit need not be found, only one of them.
        self.exact_count = False
        offsets = [_first_directory(self._data)]
        frames = 1
        while frames <= self.limits.max_pages:
            self._budget.check()
            with decoding("The image"):
                # Where the next frame's directory starts: named by the current one (frame - 1).
                following = image.tag_v2.next
                try:
                    image.seek(frames)
                except EOFError:
                    self.exact_count = True
                    break
            offsets.append(following)
            frames += 1
        self._directories = offsets
        return frames

    def _upright_size(self, index: int) -> tuple[int, int]:
        """Select frame ``index`` and read its size from its header, turned as its EXIF says."""
        with decoding(_subject(index)):
            self._image.seek(index)
            width, height = self._image.size
            orientation = self._image.getexif().get(ExifTags.Base.Orientation)
            # Pillow turns a TIFF frame itself as it loads it, and reports the upright size
            # already, but only for the orientation tag, not for one given in XMP.
            reported_upright = (
                isinstance(self._image, TiffImagePlugin.TiffImageFile)
                and self._image.tag_v2.get(ExifTags.Base.Orientation) in _QUARTER_TURNS
            )
        if orientation in _QUARTER_TURNS and not reported_upright:
            return height, width
        return width, height

    def check(self, index: int) -> None:
        width, height = self._upright_size(index)
        self.limits.check_pixels(index + 1, width, height)
        self.limits.check_shape(index + 1, width, height)

    def pixels(self, index: int) -> int:
        """The pixels frame ``index`` decodes to (a larger one is refused when it is decoded)."""
        width, height = self._upright_size(index)
        return min(width * height, self.limits.max_page_pixels)

    def page(self, index: int) -> Image.Image:
        self.check(index)
        # Decoded by an image object of its own, closed at once: the object that decodes a frame
        # keeps its pixels (until closed, or a seek to a frame of another size), which would hold
        # a second copy of each page outside the read path's page memory.
        with decoding(_subject(index)), self._open(index) as image:
            # kraken does not apply EXIF orientation to an image handed over in memory: a tablet
            # photo stored sideways would be segmented sideways (a 51-line page: 166 fragments).
            # (A TIFF frame is turned by Pillow as it loads; exif_transpose then finds no tag left.)
            upright = ImageOps.exif_transpose(image)
            if upright.mode in ("RGB", "L"):
                page = upright
            elif upright.mode in _WIDE_GREY:
                page = _eight_bit_grey(upright)
            else:
                page = upright.convert("RGB")
            page.load()
        # The orientation is applied; the metadata (EXIF, XMP, ICC) is of no use to kraken and
        # would travel to a worker with every page.
        page.info.clear()
        return page

    def _open(self, index: int = 0) -> Image.Image:
        """An image object of its own at frame ``index``. A TIFF frame is opened where its
        directory starts, found as the frames were counted: finding it from the file's start
        rereads every directory before it, for every page (a 2.3 MB TIFF of 200 frames with
        1000 tags each: 75 s of the documents thread, measured)."""
        # Only the decoder of the sniffed type may read the bytes, not any Pillow can find.
        if self._directories and index > 0:
            return Image.open(_FrameFirst(self._data, self._directories[index]), formats=[self._format])
        if isinstance(self._data, bytes):
            image = Image.open(io.BytesIO(self._data), formats=[self._format])
        else:
            self._data.seek(0)
            image = Image.open(self._data, formats=[self._format])
        if index > 0:
            image.seek(index)
        return image

    def close(self) -> None:
        self._image.close()


def _first_directory(data: bytes | BinaryIO) -> int:
    """Where a classic TIFF's first directory starts (its header's bytes 4-8; sniffed: II or MM)."""
    header = _head(data)
    return int.from_bytes(header[4:8], "little" if header[:2] == b"II" else "big")


def _head(data: bytes | BinaryIO) -> bytes:
    if isinstance(data, bytes):
        return data[:8]
    data.seek(0)
    return data.read(8)


class _FrameFirst:
    """A TIFF read as if frame n were its first: the header names n's directory, every other
    byte is the file's own (offsets in a TIFF are from the file's start, so they all hold).

    libtiff, which Pillow gives the file's descriptor or whole bytes with the directory's
    offset, reads the file itself: ``fileno`` and ``getvalue`` hand it the real ones.
    """

    def __init__(self, data: bytes | BinaryIO, directory: int) -> None:
        header = _head(data)
        order: Literal["little", "big"] = "little" if header[:2] == b"II" else "big"
        self._header = header[:4] + directory.to_bytes(4, order)
        self._data = data
        self._pos = 0

    def _size(self) -> int:
        if isinstance(self._data, bytes):
            return len(self._data)
        return self._data.seek(0, io.SEEK_END)

    def read(self, size: int | None = -1) -> bytes:
        start = self._pos
        if size is None or size < 0:
            size = max(0, self._size() - start)
        head = self._header[start : start + size]
        rest, at = b"", start + len(head)
        if size > len(head):
            if isinstance(self._data, bytes):
                rest = self._data[at : at + size - len(head)]
            else:
                self._data.seek(at)
                rest = self._data.read(size - len(head))
        self._pos = at + len(rest)
        return head + rest

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size()}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __getattr__(self, name: str) -> Any:
        # fileno (a file: libtiff reads its descriptor) or getvalue (bytes: libtiff reads them
        # whole); an attribute the source lacks is absent here too, as Pillow expects.
        if name == "fileno" and not isinstance(self._data, bytes):
            return self._data.fileno
        if name == "getvalue" and isinstance(self._data, bytes):
            data = self._data
            return lambda: data
        raise AttributeError(name)


def _eight_bit_grey(image: Image.Image) -> Image.Image:
    """Wide grey levels scaled to 8 bits: Pillow's own conversion clips every level over 255 to
    white, so a 16-bit scan (paper at 60 000, ink at 10 000) would become a blank page."""
    wide = image.convert("I")
    top = wide.getextrema()[1]
    assert isinstance(top, int)  # one band of integers
    # 16-bit levels: the high byte (v >> 8); 32-bit ones: their own range.
    scale = 1 / 256 if top <= 0xFFFF else 255 / top
    return wide.point(lambda v: v * scale).convert("L")


def _subject(index: int) -> str:
    return f"Page {index + 1} of the image"
