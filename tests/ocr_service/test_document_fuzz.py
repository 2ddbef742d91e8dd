"""Damaged documents of every supported kind: a page or a 4xx, never anything else.

Each valid input is mutated hundreds of times (seeded, so a failure names the seed that
reproduces it) and read the way the service reads it: open, check every page, decode
every page. Before the decoding guard, damaged TIFFs of five of the six compressions
escaped as TypeError ("Missing dimensions") and the like: 500s.
"""

from __future__ import annotations

import random

import pytest
from PIL import ExifTags, Image

from ocr_service.documents import Document, PageLimits
from ocr_service.errors import AppError
from tests.support.fuzz_inputs import VALID_DOCUMENTS
from tests.support.mutations import mutate

VARIANTS = 300
FUZZ_LIMITS = PageLimits(
    max_pages=5,
    max_page_pixels=1_000_000,
    pdf_dpi=72,
    max_aspect_ratio=10.0,
    max_segmentation_width=3000,
    open_timeout_s=10.0,
)


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


@pytest.mark.parametrize("kind", sorted(VALID_DOCUMENTS))
def test_a_damaged_document_gives_pages_or_a_4xx(kind: str) -> None:
    valid = VALID_DOCUMENTS[kind]()
    assert outcome(valid) is None and len(read_like_the_service(valid)) >= 1
    failures = []
    for seed in range(VARIANTS):
        problem = outcome(mutate(valid, random.Random(f"{kind}-{seed}")))
        if problem is not None:
            failures.append(f"seed {kind}-{seed}: {problem}")
    assert failures == []
