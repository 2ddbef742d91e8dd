"""Damaged documents of every supported kind: a page or a 4xx, never anything else.

Each valid input is mutated hundreds of times (seeded, so a failure names the seed that
reproduces it) and read the way the service reads it: open, check every page, decode
every page. Before the decoding guard, TIFFs alone gave TypeError, KeyError and IndexError.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable

import pytest
from PIL import ExifTags, Image

from ocr_service.documents import Document, PageLimits
from ocr_service.errors import AppError
from tests.support.mutations import mutate
from tests.support.synthetic import page_texts, render_page, to_pdf

VARIANTS = 300
FUZZ_LIMITS = PageLimits(
    max_pages=5,
    max_page_pixels=1_000_000,
    pdf_dpi=72,
    max_aspect_ratio=10.0,
    max_segmentation_width=3000,
    open_timeout_s=10.0,
)


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


INPUTS: dict[str, Callable[[], bytes]] = {
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


def read_like_the_service(data: bytes) -> list[Image.Image]:
    document = Document(data, FUZZ_LIMITS)
    try:
        document.check_all_pages()
        return list(document.pages())
    finally:
        document.close()


def outcome(data: bytes) -> str | None:
    """None for an allowed outcome, else what went wrong."""
    try:
        pages = read_like_the_service(data)
    except AppError as error:
        return None if 400 <= error.status < 500 else f"AppError {error.code} with status {error.status}"
    except Exception as exc:  # noqa: BLE001 - any other exception is the finding
        return f"{type(exc).__name__}: {exc}"
    for page in pages:
        if page.mode not in ("RGB", "L") or page.width < 1 or page.height < 1:
            return f"a page of mode {page.mode} and size {page.size}"
        if ExifTags.Base.Orientation in page.getexif():
            return "a page that still carries an orientation tag"
    return None


@pytest.mark.parametrize("kind", sorted(INPUTS))
def test_a_damaged_document_gives_pages_or_a_4xx(kind: str) -> None:
    valid = INPUTS[kind]()
    assert outcome(valid) is None and len(read_like_the_service(valid)) >= 1
    failures = []
    for seed in range(VARIANTS):
        problem = outcome(mutate(valid, random.Random(f"{kind}-{seed}")))
        if problem is not None:
            failures.append(f"seed {kind}-{seed}: {problem}")
    assert failures == []
