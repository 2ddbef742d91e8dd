"""16-bit grey scans are scaled to 8 bits, not clipped: Pillow's own conversion turns every
level over 255 white, so paper at 60 000 and ink at 10 000 became a blank page."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops

from ocr_service.documents import Document, PageLimits
from tests.ocr_service.test_ocr_api import READABLE, letter, page_cer, read_rows
from tests.support.servers import RunningApp

LIMITS = PageLimits(
    max_pages=5,
    max_page_pixels=4_000_000,
    pdf_dpi=150,
    max_aspect_ratio=10.0,
    max_segmentation_width=3000,
    open_timeout_s=10.0,
)


def sixteen_bit(page: Image.Image, paper: int, ink: int) -> Image.Image:
    """``page`` (8-bit grey, white paper) with its levels spread over 16 bits from ``ink`` to ``paper``."""
    grey = page.convert("L")
    return grey.convert("I").point(lambda v: ink + v * ((paper - ink) / 255)).convert("I;16")


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def decoded(data: bytes) -> Image.Image:
    document = Document(data, LIMITS)
    try:
        return document.page(0)
    finally:
        document.close()


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    fmt=st.sampled_from(["PNG", "TIFF"]),
    paper=st.integers(0x4000, 0xFFFF),
    ink=st.integers(0, 0x3FFF),
    seed=st.integers(1, 50),
)
def test_a_16_bit_grey_page_keeps_its_text(fmt: str, paper: int, ink: int, seed: int) -> None:
    wide = sixteen_bit(letter(seed, lines=2, size=(800, 600)).image, paper, ink)  # decoded only: no blla
    assert wide.mode == "I;16"
    page = decoded(encode(wide, fmt))
    # Every level is its high byte: the ink stays as dark against the paper as it was.
    expected = wide.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    assert page.mode == "L" and page.size == wide.size
    assert ImageChops.difference(page, expected).getbbox() is None
    darkest, lightest = wide.getextrema()
    assert page.getextrema() == (darkest >> 8, lightest >> 8) and darkest >> 8 < lightest >> 8


@pytest.mark.slow
def test_a_16_bit_scan_is_read_over_http(shared_service: RunningApp) -> None:
    page = letter(23, lines=2)
    with shared_service.client() as client:
        response = client.post(
            "/ocr",
            files={"file": ("scan.png", encode(sixteen_bit(page.image, 61_000, 9_000), "PNG"))},
            data={"model": "tiny"},
        )
    assert response.status_code == 200, response.text
    assert page_cer(read_rows(response.json()["pages"][0]["lines"]), [t.text for t in page.lines]) < READABLE
