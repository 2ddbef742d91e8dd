"""Sniffing, opening and rasterising documents; every refusal has its own code."""

from __future__ import annotations

import io
from dataclasses import replace

import pypdfium2 as pdfium
import pytest
from PIL import Image

from ocr_service.documents import Document, DocumentType, PageLimits, sniff
from ocr_service.errors import AppError, ErrorCode
from tests.support.synthetic import page_texts, render_page, to_pdf, to_png, to_tiff

LIMITS = PageLimits(
    max_pages=5,
    max_page_pixels=4_000_000,
    pdf_dpi=150,
    max_aspect_ratio=10.0,
    max_segmentation_width=3000,
    open_timeout_s=10.0,
)


def small_page(seed: int = 1) -> Image.Image:
    return render_page(page_texts(seed, 2), width=600, height=400).image


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def code_of(data: bytes, limits: PageLimits = LIMITS) -> ErrorCode:
    with pytest.raises(AppError) as caught:
        document = Document(data, limits)
        document.check_all_pages()
        list(document.pages())
    return caught.value.code


@pytest.mark.parametrize(
    ("fmt", "kind"),
    [("PNG", DocumentType.PNG), ("JPEG", DocumentType.JPEG), ("TIFF", DocumentType.TIFF), ("WEBP", DocumentType.WEBP)],
)
def test_image_types_are_sniffed_from_their_bytes(fmt: str, kind: DocumentType) -> None:
    assert sniff(encode(small_page(), fmt)) is kind


def test_pdf_is_sniffed_even_with_junk_before_the_header() -> None:
    assert sniff(b"\r\n" + to_pdf([small_page()])) is DocumentType.PDF


def test_a_text_file_named_like_a_pdf_is_refused() -> None:
    assert code_of(b"Dear archivist, this is not a scan.") is ErrorCode.UNSUPPORTED_DOCUMENT_TYPE


def test_an_empty_file_is_refused() -> None:
    assert code_of(b"") is ErrorCode.EMPTY_DOCUMENT


def test_a_pdf_without_pages_is_refused() -> None:
    empty = pdfium.PdfDocument.new()
    buffer = io.BytesIO()
    empty.save(buffer)
    assert code_of(buffer.getvalue()) is ErrorCode.EMPTY_DOCUMENT


def test_a_pdf_without_pages_is_refused_as_empty_even_after_a_damaged_one() -> None:
    # pdfium keeps the last error per thread; an empty PDF must not inherit the damaged one's.
    data = to_pdf([small_page()])
    assert code_of(data[: len(data) // 3]) is ErrorCode.CORRUPT_DOCUMENT
    empty = pdfium.PdfDocument.new()
    buffer = io.BytesIO()
    empty.save(buffer)
    assert code_of(buffer.getvalue()) is ErrorCode.EMPTY_DOCUMENT


def test_a_truncated_pdf_is_reported_as_corrupt() -> None:
    data = to_pdf([small_page()])
    assert code_of(data[: len(data) // 3]) is ErrorCode.CORRUPT_DOCUMENT


def test_a_truncated_png_is_reported_as_corrupt() -> None:
    data = to_png(small_page())
    assert code_of(data[: len(data) // 2]) is ErrorCode.CORRUPT_DOCUMENT


def test_too_many_pages_are_refused_before_any_is_rendered() -> None:
    data = to_pdf([small_page(i) for i in range(6)])
    with pytest.raises(AppError) as caught:
        Document(data, LIMITS)
    assert caught.value.code is ErrorCode.TOO_MANY_PAGES
    assert caught.value.details == {"pages": 6, "maxPages": 5}


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    # 30000 x 30000 one-bit pixels compress to a few KB but would decode to 900 megapixels.
    bomb = Image.new("1", (30_000, 30_000), 1)
    data = encode(bomb, "PNG")
    assert len(data) < 200_000
    assert code_of(data) is ErrorCode.PAGE_TOO_LARGE


def test_a_bomb_on_a_later_tiff_page_is_found_before_work_starts() -> None:
    data = to_tiff([small_page(), Image.new("L", (3000, 3000), 255)])
    document = Document(data, LIMITS)
    with pytest.raises(AppError) as caught:
        document.check_all_pages()
    assert caught.value.code is ErrorCode.PAGE_TOO_LARGE
    assert caught.value.details is not None and caught.value.details["page"] == 2


def test_multi_page_tiff_yields_each_page() -> None:
    pages = [small_page(1), small_page(2), small_page(3)]
    document = Document(to_tiff(pages), LIMITS)
    rendered = list(document.pages())
    assert document.page_count == 3
    assert [p.size for p in rendered] == [p.size for p in pages]
    assert [p.tobytes() for p in rendered] != [rendered[0].tobytes()] * 3


def test_pdf_pages_are_rendered_at_the_configured_dpi() -> None:
    # The source images are embedded at 100 dpi: 600 x 400 px = 6 x 4 in.
    document = Document(to_pdf([small_page(), small_page(2)], dpi=100), LIMITS)
    first = document.page(0)
    assert document.page_count == 2
    assert first.size[0] == pytest.approx(900, abs=1)
    assert first.size[1] == pytest.approx(600, abs=1)
    assert first.mode == "RGB"


def test_an_oversized_pdf_page_is_rendered_within_the_pixel_limit() -> None:
    tight = replace(LIMITS, max_page_pixels=200_000, pdf_dpi=300)
    document = Document(to_pdf([small_page()], dpi=100), tight)
    page = document.page(0)
    assert page.width * page.height <= 200_000
    assert page.width / page.height == pytest.approx(1.5, rel=0.01)


@pytest.mark.parametrize("frames", [1, 3])
def test_decoding_pages_leaves_no_decoded_pixels_in_the_open_document(frames: int) -> None:
    # Pillow keeps a decoded frame's pixels in the object that decoded it: had the document's
    # own handle decoded them, each open document would hold a page outside the page memory.
    document = Document(to_tiff([Image.new("RGB", (400, 300), "white")] * frames), LIMITS)
    try:
        for index in range(frames):
            assert document.page(index).size == (400, 300)
        assert document._pages._image._im is None  # type: ignore[attr-defined]
    finally:
        document.close()
