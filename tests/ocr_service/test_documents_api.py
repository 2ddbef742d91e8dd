"""Damaged and sideways documents over real HTTP: the same 4xx as the documents unit decides,
nothing left behind (the next page is read), and page sizes of the upright page."""

from __future__ import annotations

import io
import random

import pytest
from PIL import ExifTags, Image

from ocr_service.documents import Document, PageLimits
from ocr_service.errors import AppError
from tests.ocr_service.test_ocr_api import LETTER_SIZE, READABLE, letter, page_cer, read_rows
from tests.support.fuzz_inputs import VALID_DOCUMENTS
from tests.support.mutations import mutate
from tests.support.servers import RunningApp

# The shared service's limits (tests/conftest.py) with the shipped shape and time limits.
SHARED_LIMITS = PageLimits(
    max_pages=5,
    max_page_pixels=4_000_000,
    pdf_dpi=150,
    max_aspect_ratio=10.0,
    max_segmentation_width=3700,
    open_timeout_s=5.0,
)
PER_KIND = 3


def refusal(data: bytes) -> AppError | None:
    """What the service's start() decides before any page reaches a worker, or None."""
    try:
        document = Document(data, SHARED_LIMITS)
    except AppError as error:
        return error
    try:
        document.check_all_pages()
        document.page(0)
    except AppError as error:
        return error
    finally:
        document.close()
    return None


def refused_variants() -> list[tuple[str, bytes, AppError]]:
    """For every kind, the first damaged variants that are refused up front (seeded)."""
    chosen = []
    for kind, build in sorted(VALID_DOCUMENTS.items()):
        valid, found, seed = build(), 0, 0
        while found < PER_KIND:
            data = mutate(valid, random.Random(f"http-{kind}-{seed}"))
            seed += 1
            error = refusal(data)
            if error is not None:
                chosen.append((f"{kind}-{seed - 1}", data, error))
                found += 1
    return chosen


@pytest.mark.slow
def test_damaged_documents_get_their_4xx_over_http_and_the_next_page_is_read(shared_service: RunningApp) -> None:
    variants = refused_variants()
    assert len(variants) == PER_KIND * len(VALID_DOCUMENTS)
    with shared_service.client() as client:
        answers = {
            name: (response.status_code, response.json()["code"])
            for name, data, _ in variants
            for response in [client.post("/ocr", files={"file": ("scan", data)})]
        }
        assert answers == {name: (error.status, error.code.value) for name, _, error in variants}
        assert client.get("/health").status_code == 200
        page = letter(21, lines=2)
        good = client.post("/ocr", files={"file": ("scan.png", _png(page.image))}, data={"model": "tiny"})
    assert good.status_code == 200, good.text
    assert page_cer(read_rows(good.json()["pages"][0]["lines"]), [t.text for t in page.lines]) < READABLE


@pytest.mark.slow
def test_a_photo_stored_sideways_is_read_upright(shared_service: RunningApp) -> None:
    page = letter(22, lines=3)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # "turn 90° clockwise to view": stored turned back
    buffer = io.BytesIO()
    page.image.transpose(Image.Transpose.ROTATE_90).save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    with shared_service.client() as client:
        response = client.post("/ocr", files={"file": ("photo.jpg", buffer.getvalue())}, data={"model": "tiny"})
    assert response.status_code == 200, response.text
    [result] = response.json()["pages"]
    assert (result["width"], result["height"]) == page.image.size == LETTER_SIZE
    assert page_cer(read_rows(result["lines"]), [t.text for t in page.lines]) < READABLE


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
