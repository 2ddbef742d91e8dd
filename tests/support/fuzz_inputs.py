"""Small valid documents of every supported kind, to be damaged by :mod:`tests.support.mutations`.

Small on purpose: hundreds of variants each decode in milliseconds. The images carry an EXIF
orientation (6, stored sideways) where the format has one, so that damage reaches that
metadata too; TIFFs come in every compression Pillow writes.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from PIL import ExifTags, Image

from tests.support.synthetic import page_texts, render_page, to_pdf


def small_page(seed: int) -> Image.Image:
    return render_page(page_texts(seed, 2, words=3), width=160, height=110, font_size=14, margin=8).image


def saved(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def sideways_exif() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    return exif.tobytes()


def tiff(compression: str, mode: str = "RGB", pages: int = 1) -> Callable[[], bytes]:
    def build() -> bytes:
        images = [small_page(seed).convert(mode) for seed in range(pages)]
        first, *rest = images
        return saved(first, "TIFF", compression=compression, save_all=True, append_images=rest, exif=sideways_exif())

    return build


VALID_DOCUMENTS: dict[str, Callable[[], bytes]] = {
    "png": lambda: saved(small_page(1), "PNG"),
    "jpeg-exif": lambda: saved(small_page(2), "JPEG", quality=80, exif=sideways_exif()),
    "tiff-none": tiff("raw"),
    "tiff-lzw": tiff("tiff_lzw"),
    "tiff-deflate": tiff("tiff_deflate"),
    "tiff-adobe-deflate": tiff("tiff_adobe_deflate"),
    "tiff-packbits": tiff("packbits"),
    "tiff-jpeg": tiff("jpeg"),
    "tiff-group4": tiff("group4", mode="1"),
    "tiff-multipage-lzw": tiff("tiff_lzw", mode="L", pages=3),
    "webp-lossy": lambda: saved(small_page(3), "WEBP", quality=70, exif=sideways_exif()),
    "webp-lossless": lambda: saved(small_page(4), "WEBP", lossless=True),
    "pdf": lambda: to_pdf([small_page(5), small_page(6)], dpi=72),
}
