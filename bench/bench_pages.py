"""Benchmark: rendering one page for the UI (display image + thumbnail, WebP), the cost of a first view.

    .venv/bin/python bench/bench_pages.py [--repeat 5]

Cases, with the shipped APP_PAGE_* defaults (150 dpi, long side 2400 px, thumbnail 300 px):
1. a scanned letter as a PDF: an A4 page holding a 300-dpi scan (2480×3508);
2. a phone photo: a 12-megapixel JPEG (4000×3000) stored sideways (EXIF orientation 6);
3. a 300-dpi A4 scan as a PNG (2480×3508).
Later views read the stored WebP (no render). Results are printed and written to
bench/results/pages.json.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import pypdfium2 as pdfium
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.deps import render_limits  # noqa: E402
from backend.documents.render import render_page  # noqa: E402
from backend.settings import Settings  # noqa: E402

A4 = (2480, 3508)


def scan(size: tuple[int, int]) -> Image.Image:
    """Paper-coloured page with lines of handwriting-like strokes."""
    image = Image.new("RGB", size, (236, 226, 200))
    draw = ImageDraw.Draw(image)
    step = size[1] // 45
    for n, y in enumerate(range(step * 2, size[1] - step, step)):
        x = size[0] // 12
        while x < size[0] * 11 // 12:
            width = 20 + (x * 7 + n * 13) % 100
            draw.line([(x, y), (x + width, y + (x % 17) - 8)], fill=(40, 30, 90), width=5)
            x += width + 18
    return image.filter(ImageFilter.GaussianBlur(1))


def pdf_with_scan() -> bytes:
    pdf = pdfium.PdfDocument.new()
    page = pdf.new_page(595.28, 841.89)
    picture = pdfium.PdfImage.new(pdf)
    buffer = io.BytesIO()
    scan(A4).save(buffer, "JPEG", quality=85)
    buffer.seek(0)
    picture.load_jpeg(buffer, inline=True)
    picture.set_matrix(pdfium.PdfMatrix().scale(595.28, 841.89))
    page.insert_obj(picture)
    page.gen_content()
    out = io.BytesIO()
    pdf.save(out)
    pdf.close()
    return out.getvalue()


def photo() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    scan((4000, 3000)).save(buffer, "JPEG", quality=90, exif=exif)
    return buffer.getvalue()


def png_scan() -> bytes:
    buffer = io.BytesIO()
    scan(A4).save(buffer, "PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    limits = render_limits(Settings())
    cases = {
        "pdf: A4 with a 300-dpi scan": ("application/pdf", pdf_with_scan()),
        "jpeg: 12 MP photo, EXIF 6": ("image/jpeg", photo()),
        "png: 300-dpi A4 scan": ("image/png", png_scan()),
    }
    results = {}
    for name, (media_type, data) in cases.items():
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            rendered = render_page(io.BytesIO(data), media_type, 1, limits)
            times.append(time.perf_counter() - started)
        shown = Image.open(io.BytesIO(rendered.image))
        results[name] = {
            "originalBytes": len(data),
            "renderSecondsMedian": round(statistics.median(times), 3),
            "renderSecondsMax": round(max(times), 3),
            "imageSize": list(shown.size),
            "imageBytes": len(rendered.image),
            "thumbnailBytes": len(rendered.thumbnail),
            "ocrSize": [rendered.width, rendered.height],
        }
        print(name, json.dumps(results[name]))
    out = ROOT / "bench" / "results" / "pages.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
