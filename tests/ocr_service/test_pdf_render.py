"""PDF pages are rendered in a child process within a time limit; opening a PDF leaks nothing.

A page that renders for hours (a 4 KB PDF of nested forms) is refused with 422
DOCUMENT_TOO_COMPLEX once the limit has passed, its renderer is killed, and the documents that
were open in it are rendered by the next one. The child's pages are the pixels pdfium renders
in-process.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import psutil
import pypdfium2 as pdfium
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops

from ocr_service.documents import Document, PageLimits
from ocr_service.errors import AppError, ErrorCode
from ocr_service.page_limits import render_address_space
from ocr_service.pdf_render import PdfRenderer
from tests.support import crashing_pdf_renderer
from tests.support.pdf_builds import nested_forms_pdf, pageless_pdf
from tests.support.synthetic import to_pdf

LIMITS = PageLimits(
    max_pages=5,
    max_page_pixels=4_000_000,
    pdf_dpi=100,
    max_aspect_ratio=10.0,
    max_segmentation_width=3000,
    open_timeout_s=10.0,
    render_timeout_s=5.0,
)
# 10^8 strokes in one object: hours to render, where the limit is 5 s.
SLOW_PDF = nested_forms_pdf(depth=9, fan=10)


@pytest.fixture
def renderer() -> Iterator[PdfRenderer]:
    own = PdfRenderer()
    yield own
    own.close()


def noise(size: tuple[int, int], seed: int) -> Image.Image:
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3))


def noise_pdf(pages: int = 2, size: tuple[int, int] = (300, 200)) -> bytes:
    return to_pdf([noise(size, n) for n in range(pages)], dpi=72)


def in_process(data: bytes, index: int, scale: float) -> Image.Image:
    """What pdfium renders in this process, as the service did before it used a child."""
    pdf = pdfium.PdfDocument(data)
    try:
        page = pdf[index]
        image = page.render(scale=scale, grayscale=False).to_pil().convert("RGB")
        page.close()
        return image
    finally:
        pdf.close()


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and a.mode == b.mode and ImageChops.difference(a, b).getbbox() is None


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_page_slow_to_render_is_refused_and_the_next_pages_are_rendered(renderer: PdfRenderer) -> None:
    fds = open_fds()
    waiting = Document(noise_pdf(2), LIMITS, renderer=renderer)
    slow = Document(SLOW_PDF, LIMITS, renderer=renderer)
    try:
        assert same_pixels(waiting.page(0), in_process(noise_pdf(2), 0, 100 / 72))
        child = renderer.child_pid
        assert child is not None

        with pytest.raises(AppError) as caught:
            slow.page(0)
        assert caught.value.code is ErrorCode.DOCUMENT_TOO_COMPLEX and caught.value.status == 422
        assert caught.value.message.startswith("Page 1 of the PDF took longer than 5 s to render")
        assert caught.value.details == {"page": 1, "limitSeconds": 5.0}
        assert not alive(child) and renderer.child_pid is None
        # Nothing of the killed child is left here: not its socket, not a zombie process.
        assert open_fds() == fds and child not in [c.pid for c in psutil.Process().children()]

        # The document is refused for good: its other pages are not tried for another 5 s each.
        with pytest.raises(AppError) as again:
            slow.page(0)
        assert again.value.code is ErrorCode.DOCUMENT_TOO_COMPLEX
        assert renderer.children_started == 1

        # The document that was open in the killed child is reopened in a fresh one.
        assert same_pixels(waiting.page(1), in_process(noise_pdf(2), 1, 100 / 72))
        assert renderer.children_started == 2
    finally:
        slow.close()
        waiting.close()


def test_documents_from_a_spooled_file_are_rendered_from_its_descriptor(renderer: PdfRenderer) -> None:
    data = noise_pdf(2, (500, 333))
    with tempfile.TemporaryFile() as spooled:
        spooled.write(data)
        spooled.seek(0)
        document = Document(spooled, LIMITS, renderer=renderer)
        try:
            # pdfium in the service reads the same file between the child's renders.
            for index in (1, 0, 1):
                document.check_all_pages()
                assert same_pixels(document.page(index), in_process(data, index, 100 / 72))
        finally:
            document.close()


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    width=st.integers(61, 610),  # odd widths too: pdfium pads each row of the bitmap
    height=st.integers(61, 610),
    rotation=st.sampled_from([0, 90, 180, 270]),
    dpi=st.integers(50, 160),
)
def test_the_child_renders_the_pixels_pdfium_renders_in_process(
    width: int, height: int, rotation: int, dpi: int
) -> None:
    pdf = pdfium.PdfDocument(to_pdf([noise((width, height), width * height)], dpi=72))
    pdf[0].set_rotation(rotation)
    buffer = io.BytesIO()
    pdf.save(buffer)
    pdf.close()
    data = buffer.getvalue()
    limits = replace(LIMITS, pdf_dpi=dpi, max_segmentation_width=20_000)
    document = Document(data, limits)
    try:
        assert same_pixels(document.page(0), in_process(data, 0, dpi / 72))
    finally:
        document.close()


def test_a_renderer_that_dies_once_is_replaced_and_the_page_rendered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRASHING_PDF_RENDERER", f"once:{tmp_path / 'crashed'}")
    renderer = PdfRenderer(child=crashing_pdf_renderer.CHILD)
    document = Document(noise_pdf(1), LIMITS, renderer=renderer)
    try:
        assert same_pixels(document.page(0), in_process(noise_pdf(1), 0, 100 / 72))
        assert renderer.children_started == 2
    finally:
        document.close()
        renderer.close()


def test_a_page_that_ends_the_renderer_twice_is_a_damaged_document(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRASHING_PDF_RENDERER", "always")
    renderer = PdfRenderer(child=crashing_pdf_renderer.CHILD)
    document = Document(noise_pdf(2), LIMITS, renderer=renderer)
    try:
        with pytest.raises(AppError) as caught:
            document.page(1)
        assert caught.value.code is ErrorCode.CORRUPT_DOCUMENT
        assert (
            caught.value.message == "Page 2 of the PDF made the renderer fail twice; it is damaged and cannot be read."
        )
        assert renderer.children_started == 2
    finally:
        document.close()
        renderer.close()


def test_a_closed_renderer_leaves_no_child(renderer: PdfRenderer) -> None:
    document = Document(noise_pdf(1), LIMITS, renderer=renderer)
    document.page(0)
    child = renderer.child_pid
    assert child is not None and alive(child)
    document.close()
    renderer.close()
    assert not alive(child)


def test_pdfs_without_pages_leave_no_document_open() -> None:
    # pypdfium2 keeps the handle of such a PDF open: with 20 000 objects about 1.2 MB each
    # time, 240 MB for these 200 (measured before the fix).
    data = pageless_pdf(20_000)
    process = psutil.Process()
    with tempfile.TemporaryFile() as spooled:
        spooled.write(data)
        for source in (data, spooled):  # warm up: the allocator's first arenas are not a leak
            with pytest.raises(AppError):
                Document(source, LIMITS)
        memory, fds = process.memory_info().rss, open_fds()
        for attempt in range(200):
            with pytest.raises(AppError) as caught:
                Document(data if attempt % 2 else spooled, LIMITS)
            assert caught.value.code is ErrorCode.EMPTY_DOCUMENT
        grown_mb = (process.memory_info().rss - memory) / 2**20
        assert open_fds() == fds
    assert grown_mb < 40


class _PieceReader(io.BytesIO):
    """A file that remembers whether it was ever read whole (``read()`` without a size)."""

    read_whole = False

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            self.read_whole = True
        return super().read(size)


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.999])
def test_a_damaged_pdf_is_refused_without_being_read_whole(cut: float) -> None:
    data = noise_pdf(3, (900, 700))
    damaged = _PieceReader(data[: int(len(data) * cut)])
    with pytest.raises(AppError) as caught:
        document = Document(damaged, LIMITS)
        document.close()
    assert caught.value.code is ErrorCode.CORRUPT_DOCUMENT
    assert not damaged.read_whole


def test_the_renderer_ends_with_a_service_killed_in_the_middle_of_a_render() -> None:
    # A service killed by the OOM killer or `kill -9` while its child renders a page of hours
    # must not leave the child rendering on, an orphan, for those hours.
    parent = subprocess.Popen(
        [sys.executable, "-m", "tests.support.renderer_parent"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    child: psutil.Process | None = None
    try:
        assert parent.stdout is not None
        child = psutil.Process(int(parent.stdout.readline()))
        # The child is rendering once it spends CPU time after it said it was ready.
        started = child.cpu_times().user
        while child.cpu_times().user < started + 0.3:
            time.sleep(0.05)
        parent.kill()
        parent.wait()
        # Not a bound on how fast: a child that renders on would still render in an hour.
        for _ in range(600):
            if _ended(child):
                break
            time.sleep(0.05)
        assert _ended(child)
    finally:
        parent.kill()
        parent.wait()
        if child is not None and not _ended(child):
            child.kill()


def _ended(process: psutil.Process) -> bool:
    """Gone, or a zombie (ended, waiting for a PID 1 that may not reap orphans)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_page_that_needs_more_memory_than_the_renderer_may_map_is_refused() -> None:
    # RLIMIT_AS sized for pages of 4 MP: the bitmap of a 400 MP render (1.6 GB) cannot be mapped,
    # as an image or pattern pdfium would inflate without bound cannot: the child is refused the
    # memory, not the machine, and renders on.
    renderer = PdfRenderer(address_space=render_address_space(LIMITS.max_page_pixels))
    key = renderer.add(noise_pdf(1, (200, 200)))
    try:
        assert renderer.render(key, 0, 40.0, 30.0).size == (8000, 8000)  # 64 MP: within the limit
        child = renderer.child_pid
        assert child is not None
        assert psutil.Process(child).rlimit(psutil.RLIMIT_AS) == (render_address_space(LIMITS.max_page_pixels),) * 2
        with pytest.raises(AppError) as caught:
            renderer.render(key, 0, 100.0, 30.0)
        assert caught.value.code is ErrorCode.DOCUMENT_TOO_COMPLEX and caught.value.status == 422
        assert caught.value.message.startswith("Page 1 of the PDF needs more memory to render than any page may take")
        assert caught.value.details == {"page": 1}
        # The same child renders the next page.
        assert same_pixels(renderer.render(key, 0, 1.0, 30.0), in_process(noise_pdf(1, (200, 200)), 0, 1.0))
        assert renderer.child_pid == child and renderer.children_started == 1
    finally:
        renderer.remove(key)
        renderer.close()


def test_a_page_that_makes_pdfium_allocate_without_bound_ends_at_the_renderers_limit() -> None:
    # The 4 KB page of nested forms grows pdfium by about 500 MB a second (15 GB within the
    # default time limit, measured): at the child's limit pdfium ends its process. That is the
    # page's demand, not a passing fault: refused at once, not tried on a second child.
    renderer = PdfRenderer(address_space=render_address_space(LIMITS.max_page_pixels))
    slow = Document(SLOW_PDF, replace(LIMITS, render_timeout_s=600.0), renderer=renderer)
    waiting = Document(noise_pdf(2), LIMITS, renderer=renderer)
    try:
        with pytest.raises(AppError) as caught:
            slow.page(0)
        assert caught.value.code is ErrorCode.DOCUMENT_TOO_COMPLEX and caught.value.status == 422
        assert caught.value.message.startswith("Page 1 of the PDF needs more memory to render than any page may take")
        assert renderer.children_started == 1
        with pytest.raises(AppError) as again:
            slow.page(0)
        assert again.value.code is ErrorCode.DOCUMENT_TOO_COMPLEX and renderer.children_started == 1
        assert same_pixels(waiting.page(1), in_process(noise_pdf(2), 1, 100 / 72))
        assert renderer.children_started == 2
    finally:
        slow.close()
        waiting.close()
        renderer.close()


def test_a_render_cut_off_by_the_renderer_closing_is_503_not_500() -> None:
    # The service stops while a page renders: the page is not the document's fault, and no 500.
    renderer = PdfRenderer()
    document = Document(SLOW_PDF, replace(LIMITS, render_timeout_s=600.0), renderer=renderer)
    try:
        with ThreadPoolExecutor(max_workers=1) as thread:
            rendering = thread.submit(document.page, 0)
            while renderer.child_pid is None:
                time.sleep(0.05)
            child = psutil.Process(renderer.child_pid)
            started = child.cpu_times().user
            while child.cpu_times().user < started + 0.3:  # rendering, not starting
                time.sleep(0.05)
            renderer.close()
            with pytest.raises(AppError) as caught:
                rendering.result()
        assert caught.value.code is ErrorCode.MODELS_NOT_READY and caught.value.status == 503
        assert caught.value.headers == {"Retry-After": "10"}
        assert not alive(child.pid)
    finally:
        document.close()
