"""Generated documents for the backend's tests: every file differs by its seed (no accidental duplicates)."""

from __future__ import annotations

import io
from types import ModuleType
from typing import Any

import pypdfium2
import pytest
from PIL import Image

KINDS = {"pdf": "application/pdf", "png": "image/png", "jpeg": "image/jpeg", "tiff": "image/tiff", "webp": "image/webp"}


def _image(seed: int, size: tuple[int, int] = (40, 30)) -> Image.Image:
    image = Image.new("RGB", size, (seed % 251, (seed // 251) % 251, 200))
    image.putpixel((seed % size[0], 0), (255 - seed % 200, 0, 0))
    return image


def make_document(kind: str, seed: int, pages: int = 1) -> bytes:
    buffer = io.BytesIO()
    if kind == "pdf":
        pdf = pypdfium2.PdfDocument.new()
        for number in range(pages):
            pdf.new_page(200 + seed % 300, 300 + number)
        pdf.save(buffer)
        pdf.close()
        return buffer.getvalue()
    frames = [_image(seed * 1000 + n) for n in range(pages)]
    fmt = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "webp": "WEBP"}[kind]
    extra = {"save_all": True, "append_images": frames[1:]} if pages > 1 else {}
    frames[0].save(buffer, fmt, **extra)
    return buffer.getvalue()


def closing_each_page_image(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> list[Image.Image]:
    """Wrap ``module.render_ocr_page`` so that drawing a page fails the test unless every page image
    drawn before it was closed; returns the list of the images drawn, in order."""
    drawn: list[Image.Image] = []
    render = module.render_ocr_page

    def tracked(*args: Any) -> Image.Image:
        for earlier in drawn:
            with pytest.raises(ValueError, match="closed"):
                earlier.getpixel((0, 0))
        image = render(*args)
        drawn.append(image)
        return image

    monkeypatch.setattr(module, "render_ocr_page", tracked)
    return drawn
