"""Pages blla cannot segment sensibly (absurd side ratios, huge widths once scaled to 1800 px
height) are refused with 422 PAGE_SHAPE_UNSUPPORTED; every real paper format passes."""

from __future__ import annotations

import io
import math
from dataclasses import replace
from fractions import Fraction

import pypdfium2 as pdfium
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ocr_service.documents import Document, PageLimits
from ocr_service.errors import AppError, ErrorCode
from ocr_service.page_limits import SEGMENTATION_HEIGHT
from ocr_service.settings import Settings


def default(field: str) -> object:
    return Settings.model_fields[field].default


# The shipped defaults, not a test's own numbers: these are what the archive's pages meet.
SHIPPED = PageLimits(
    max_pages=200,
    max_page_pixels=int(str(default("max_page_pixels"))),
    pdf_dpi=50,
    max_aspect_ratio=float(str(default("max_page_aspect_ratio"))),
    max_segmentation_width=int(str(default("max_segmentation_width"))),
    open_timeout_s=10.0,
)

# Paper formats in millimetres (portrait): ISO A and B, letter, legal, tabloid, postcards,
# DL and C6/5 envelopes, and till receipts 80 mm wide and up to 10 times as long.
FORMATS_MM = {
    **{f"A{n}": (round(841 / 2 ** (n / 2)), round(1189 / 2 ** (n / 2))) for n in range(0, 9)},
    **{f"B{n}": (round(1000 / 2 ** (n / 2)), round(1414 / 2 ** (n / 2))) for n in range(1, 8)},
    "letter": (216, 279),
    "legal": (216, 356),
    "tabloid": (279, 432),
    "postcard": (105, 148),
    "us-postcard": (89, 140),
    "envelope-dl": (110, 220),
    "envelope-c6/5": (114, 229),
    "receipt-short": (80, 300),
    "receipt-long": (80, 800),
}


def shape_refused(limits: PageLimits, width: float, height: float) -> bool:
    try:
        limits.check_shape(1, width, height)
    except AppError as error:
        assert error.code is ErrorCode.PAGE_SHAPE_UNSUPPORTED
        return True
    return False


def within_limits(limits: PageLimits, width: int, height: int) -> bool:
    """The rule stated plainly: at most R times as tall as wide or as wide as tall, and no
    wider than the limit once scaled to 1800 px height (ceil(x) <= n iff x <= n for whole n)."""
    ratio = Fraction(limits.max_aspect_ratio)
    return (
        height <= ratio * width
        and width <= ratio * height
        and width * SEGMENTATION_HEIGHT <= limits.max_segmentation_width * height
    )


# A receipt is never scanned lying on its side; every other format may be.
ORIENTED = [(name, False) for name in FORMATS_MM] + [(n, True) for n in FORMATS_MM if not n.startswith("receipt")]


@pytest.mark.parametrize(
    ("name", "landscape"), ORIENTED, ids=[f"{n}-{'landscape' if o else 'portrait'}" for n, o in ORIENTED]
)
def test_every_real_paper_format_passes_at_300_dpi(name: str, landscape: bool) -> None:
    width_mm, height_mm = FORMATS_MM[name]
    width, height = round(width_mm / 25.4 * 300), round(height_mm / 25.4 * 300)
    if landscape:
        width, height = height, width
    assert not shape_refused(SHIPPED, width, height)


@settings(max_examples=400, deadline=None)
@given(
    width=st.integers(1, 200_000),
    height=st.integers(1, 200_000),
    ratio=st.sampled_from([1.5, 2.0, 8.0, 10.0, 12.5]),
    max_width=st.integers(1800, 20_000),
)
def test_a_page_is_refused_exactly_when_it_is_outside_the_limits(
    width: int, height: int, ratio: float, max_width: int
) -> None:
    limits = replace(SHIPPED, max_aspect_ratio=ratio, max_segmentation_width=max_width)
    assert shape_refused(limits, width, height) is not within_limits(limits, width, height)


@settings(max_examples=200, deadline=None)
@given(height=st.integers(1, 100_000), max_width=st.integers(1800, 20_000))
def test_the_widest_page_passes_and_one_pixel_more_is_refused(height: int, max_width: int) -> None:
    limits = replace(SHIPPED, max_aspect_ratio=100.0, max_segmentation_width=max_width)
    widest = max_width * height // SEGMENTATION_HEIGHT
    if widest >= 1:
        assert not shape_refused(limits, widest, height)
    assert shape_refused(limits, widest + 1, height)


@settings(max_examples=200, deadline=None)
@given(width=st.integers(1, 20_000), ratio=st.sampled_from([1.5, 2.5, 8.0, 10.0, 12.5]))
def test_the_tallest_page_passes_and_one_pixel_more_is_refused(width: int, ratio: float) -> None:
    limits = replace(SHIPPED, max_aspect_ratio=ratio)
    tallest = int(Fraction(ratio) * width)
    assert not shape_refused(limits, width, tallest)
    assert shape_refused(limits, width, tallest + 1)


@given(
    width=st.one_of(
        st.floats(max_value=0.999),
        st.sampled_from([math.nan, math.inf, -math.inf]),
        st.integers(-5, 0),
    ),
    height=st.floats(1, 1e6),
)
def test_a_page_without_a_usable_size_is_damaged(width: float, height: float) -> None:
    for w, h in ((width, height), (height, width)):
        with pytest.raises(AppError) as caught:
            SHIPPED.check_shape(1, w, h)
        assert caught.value.code is ErrorCode.CORRUPT_DOCUMENT


def test_a_wide_image_within_the_pixel_cap_is_refused_before_it_is_decoded() -> None:
    # 30 000 x 2 000 = 60 megapixels: at the pixel cap, but 27 000 px wide at 1800 px height.
    buffer = io.BytesIO()
    Image.new("1", (30_000, 2_000), 1).save(buffer, format="PNG")
    document = Document(buffer.getvalue(), SHIPPED)
    with pytest.raises(AppError) as caught:
        document.check_all_pages()
    assert caught.value.code is ErrorCode.PAGE_SHAPE_UNSUPPORTED
    assert caught.value.status == 422
    assert caught.value.details == {"page": 1, "width": 30_000, "height": 2_000}
    with pytest.raises(AppError) as caught:
        document.page(0)
    assert caught.value.code is ErrorCode.PAGE_SHAPE_UNSUPPORTED


def pdf_page(width_pt: float, height_pt: float, rotation: int) -> bytes:
    pdf = pdfium.PdfDocument.new()
    pdf.new_page(595, 842)
    page = pdf.new_page(width_pt, height_pt)
    page.set_rotation(rotation)
    buffer = io.BytesIO()
    pdf.save(buffer)
    return buffer.getvalue()


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(20, 20_000),
    height=st.integers(20, 20_000),
    rotation=st.sampled_from([0, 90, 180, 270]),
)
def test_a_pdf_page_is_judged_by_its_shape_as_displayed(width: int, height: int, rotation: int) -> None:
    shown = (height, width) if rotation in (90, 270) else (width, height)
    limits = replace(SHIPPED, max_page_pixels=200_000)
    document = Document(pdf_page(width, height, rotation), limits)
    if within_limits(limits, *shown):
        document.check_all_pages()
        rendered = document.page(1)
        assert (rendered.width > rendered.height) is (shown[0] > shown[1]) or abs(shown[0] - shown[1]) < 2
        return
    with pytest.raises(AppError) as caught:
        document.check_all_pages()
    assert caught.value.code is ErrorCode.PAGE_SHAPE_UNSUPPORTED
    assert caught.value.details is not None and caught.value.details["page"] == 2
    with pytest.raises(AppError) as caught:
        document.page(1)
    assert caught.value.code is ErrorCode.PAGE_SHAPE_UNSUPPORTED
