"""Reading a document's structure is bounded: pages are counted only up to the limit, and the
time spent on page counts and page sizes has a budget (an injected clock, never a sleep)."""

from __future__ import annotations

import io
import random
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from typing import BinaryIO

import pypdfium2 as pdfium
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops, TiffImagePlugin

from ocr_service.documents import Document, PageLimits
from ocr_service.errors import AppError, ErrorCode
from tests.support.tiff_frames import many_frame_tiff

LIMITS = PageLimits(
    max_pages=5,
    max_page_pixels=4_000_000,
    pdf_dpi=72,
    max_aspect_ratio=10.0,
    max_segmentation_width=3000,
    open_timeout_s=5.0,
)


class ManualClock:
    """Time moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TickingClock:
    """Every reading is one second after the last: work that reads the clock more often is charged more."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@pytest.fixture
def ifd_loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many TIFF directories (IFDs) Pillow parses."""
    loads = [0]
    original = TiffImagePlugin.ImageFileDirectory_v2.load

    def counting(self: TiffImagePlugin.ImageFileDirectory_v2, fp: io.BytesIO) -> None:
        loads[0] += 1
        original(self, fp)

    monkeypatch.setattr(TiffImagePlugin.ImageFileDirectory_v2, "load", counting)
    yield loads


def blank_pdf(pages: int) -> bytes:
    pdf = pdfium.PdfDocument.new()
    for _ in range(pages):
        pdf.new_page(595, 842)
    buffer = io.BytesIO()
    pdf.save(buffer)
    return buffer.getvalue()


def test_a_tiff_of_50000_frames_is_refused_after_counting_one_frame_past_the_limit(ifd_loads: list[int]) -> None:
    data = many_frame_tiff(50_000)
    with pytest.raises(AppError) as caught:
        Document(data, LIMITS)
    assert caught.value.code is ErrorCode.TOO_MANY_PAGES
    assert caught.value.details == {"maxPages": 5}
    # Six frames found, each for two parses (Pillow's seek walks to a directory, then reads it
    # again as the selected one); Pillow's n_frames would have parsed all 50 000.
    assert ifd_loads[0] == 2 * (LIMITS.max_pages + 1)


@pytest.mark.parametrize("frames", [1, 2, 4, 5, 6, 7, 12, 300])
def test_a_tiff_is_accepted_exactly_up_to_the_page_limit(frames: int) -> None:
    data = many_frame_tiff(frames)
    if frames > LIMITS.max_pages:
        with pytest.raises(AppError) as caught:
            Document(data, LIMITS)
        assert caught.value.code is ErrorCode.TOO_MANY_PAGES
        return
    document = Document(data, LIMITS)
    document.check_all_pages()
    assert document.page_count == frames
    assert [page.getpixel((0, 0)) for page in document.pages()] == list(range(frames))


def test_a_tiff_whose_directories_are_costly_is_refused_within_the_time_budget(ifd_loads: list[int]) -> None:
    # 150 frames, each directory with 2000 tags: under the page limit, costly to walk.
    limits = replace(LIMITS, max_pages=200)
    clock = TickingClock()
    with pytest.raises(AppError) as caught:
        Document(many_frame_tiff(150, padding_tags=2000), limits, clock=clock)
    assert caught.value.code is ErrorCode.DOCUMENT_TOO_COMPLEX
    assert caught.value.status == 422
    assert caught.value.details is not None and caught.value.details["limitSeconds"] == 5.0
    # Refused a few frames in, not after walking all 150.
    assert ifd_loads[0] < 20


def test_page_sizes_are_checked_within_the_same_budget() -> None:
    # Opening a PDF reads the clock twice (one second); each page checked costs one more.
    clock = TickingClock()
    document = Document(blank_pdf(5), replace(LIMITS, open_timeout_s=3.0), clock=clock)
    with pytest.raises(AppError) as caught:
        document.check_all_pages()
    assert caught.value.code is ErrorCode.DOCUMENT_TOO_COMPLEX


def test_time_spent_waiting_between_the_steps_is_not_charged() -> None:
    # A document waits behind others on the one documents thread between opening and checking.
    clock = ManualClock()
    document = Document(many_frame_tiff(5), LIMITS, clock=clock)
    clock.now += 3600
    document.check_all_pages()
    assert document.page_count == 5


def test_a_document_refused_while_opening_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[str] = []
    original = pdfium.PdfDocument.close

    def close(self: pdfium.PdfDocument) -> None:
        closed.append("pdf")
        original(self)

    monkeypatch.setattr(pdfium.PdfDocument, "close", close)
    with pytest.raises(AppError):
        Document(blank_pdf(6), LIMITS)
    assert closed == ["pdf"]


def test_decoding_a_late_tiff_frame_does_not_walk_the_directories_before_it_again(ifd_loads: list[int]) -> None:
    # Each page is decoded by an image object of its own; finding frame n from the file's start
    # reread n directories for every page: with 1000 tags each (2.3 MB, 200 frames, within the
    # structure budget) about 75 s of the one documents thread for the whole document, measured.
    limits = replace(LIMITS, max_pages=200)
    document = Document(many_frame_tiff(120, padding_tags=50), limits)
    try:
        document.check_all_pages()
        loads = {}
        for index in (119, 0, 60, 118, 119, 1):
            before = ifd_loads[0]
            page = document.page(index)
            loads[index + 1] = ifd_loads[0] - before
            assert page.size == (1, 1) and page.getpixel((0, 0)) == index % 256
        # A few directory reads per page (its own, in the shared image and the decoding one;
        # its EXIF), the same for the last page as for the first: before, page 120 read 123.
        assert max(loads.values()) <= 6, loads
    finally:
        document.close()


@settings(max_examples=30, deadline=None)
@given(
    compression=st.sampled_from(["raw", "tiff_lzw", "tiff_adobe_deflate", "packbits", "group4", "jpeg"]),
    frames=st.integers(2, 6),
    source=st.sampled_from(["bytes", "file", "memory"]),
    seed=st.integers(0, 2**16),
)
def test_every_tiff_frame_opened_at_its_directory_is_the_frame_pillow_decodes(
    compression: str, frames: int, source: str, seed: int
) -> None:
    # A frame's pixels come from the file through Pillow (raw) or libtiff, which reads the
    # descriptor (a spooled file), the whole bytes, or what the reader gives it (no descriptor).
    rng = random.Random(seed)
    mode = "1" if compression == "group4" else rng.choice(["L", "RGB"])
    images = [
        Image.frombytes("L", (w, h), rng.randbytes(w * h)).convert(mode)
        for w, h in ((rng.randint(20, 70), rng.randint(70, 140)) for _ in range(frames))  # upright pages
    ]
    buffer = io.BytesIO()
    images[0].save(buffer, "TIFF", save_all=True, append_images=images[1:], compression=compression)
    data = buffer.getvalue()
    with tempfile.TemporaryFile() as spooled:
        spooled.write(data)
        opened: bytes | BinaryIO = {"bytes": data, "file": spooled, "memory": io.BytesIO(data)}[source]
        document = Document(opened, replace(LIMITS, max_pages=10))
        try:
            for index in [*range(frames)][::-1]:
                expected = Image.open(io.BytesIO(data))
                expected.seek(index)
                wanted = expected.convert("RGB" if expected.mode not in ("RGB", "L") else expected.mode)
                page = document.page(index)
                assert page.size == wanted.size and page.mode == wanted.mode
                assert ImageChops.difference(page, wanted).getbbox() is None
        finally:
            document.close()
