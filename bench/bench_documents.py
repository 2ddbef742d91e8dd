"""Benchmark: how long documents built to stall the documents thread hold it before refusal.

    .venv/bin/python bench/bench_documents.py [--repeat 5] [--compare]

1. A TIFF of 50 000 one-pixel frames (5.7 MB, inside the upload limit): refused with
   413 TOO_MANY_PAGES after counting OCR_MAX_PAGES + 1 frames.
2. A TIFF of 130 frames whose directories hold 60 000 tags each (94 MB): under the page
   limit, but costly to walk; refused with 422 DOCUMENT_TOO_COMPLEX once reading its
   structure has taken OCR_DOCUMENT_OPEN_TIMEOUT_S.
3. For scale, legitimate 200-page documents (a TIFF, a PDF): opened and every page checked.
4. A PDF page of forms nested nine levels deep (3.5 KB, hours to render): refused with 422
   DOCUMENT_TOO_COMPLEX once rendering it has taken OCR_PDF_RENDER_TIMEOUT_S; then the time
   until the next document's page is rendered (a fresh renderer process), and what rendering
   in that process costs against pdfium in the service's own process (an A4 scan at 300 dpi).

``--compare`` also times Pillow's own ``n_frames`` on the 50 000-frame TIFF, the walk the
service did before (minutes). Limits are the shipped defaults. Results are printed and
written to bench/results/documents.json.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pypdfium2 as pdfium
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocr_service.documents import Document, PageLimits  # noqa: E402
from ocr_service.errors import AppError  # noqa: E402
from ocr_service.settings import Settings  # noqa: E402
from tests.support.pdf_builds import nested_forms_pdf  # noqa: E402
from tests.support.synthetic import to_pdf  # noqa: E402
from tests.support.tiff_frames import many_frame_tiff  # noqa: E402


def shipped_limits() -> PageLimits:
    def default(name: str) -> object:
        return Settings.model_fields[name].default

    return PageLimits(
        max_pages=int(str(default("max_pages"))),
        max_page_pixels=int(str(default("max_page_pixels"))),
        pdf_dpi=int(str(default("pdf_dpi"))),
        max_aspect_ratio=float(str(default("max_page_aspect_ratio"))),
        max_segmentation_width=int(str(default("max_segmentation_width"))),
        open_timeout_s=float(str(default("document_open_timeout_s"))),
        render_timeout_s=float(str(default("pdf_render_timeout_s"))),
    )


def open_and_check(data: bytes, limits: PageLimits) -> str:
    """What the service does before any page is read; the outcome as a code or 'accepted'."""
    try:
        document = Document(data, limits)
    except AppError as error:
        return error.code.value
    try:
        document.check_all_pages()
    except AppError as error:
        return error.code.value
    finally:
        document.close()
    return "accepted"


def timed(run: Callable[[], str], repeat: int) -> dict[str, object]:
    seconds, outcomes = [], set()
    for _ in range(repeat):
        started = time.perf_counter()
        outcomes.add(run())
        seconds.append(time.perf_counter() - started)
    return {"outcome": "/".join(sorted(outcomes)), "median_s": round(statistics.median(seconds), 4)}


def blank_pdf(pages: int) -> bytes:
    pdf = pdfium.PdfDocument.new()
    for _ in range(pages):
        pdf.new_page(595, 842)
    buffer = io.BytesIO()
    pdf.save(buffer)
    return buffer.getvalue()


def render_first_page(data: bytes, limits: PageLimits) -> str:
    document = Document(data, limits)
    try:
        document.page(0)
    except AppError as error:
        return error.code.value
    finally:
        document.close()
    return "rendered"


def render_in_process(data: bytes, scale: float) -> str:
    pdf = pdfium.PdfDocument(data)
    page = pdf[0]
    page.render(scale=scale, grayscale=False).to_pil().convert("RGB")
    page.close()
    pdf.close()
    return "rendered"


def rendering(limits: PageLimits, repeat: int) -> dict[str, object]:
    """Case 4: a page that renders for hours, the page after it, and a scan page's cost."""
    scan = to_pdf([Image.effect_noise((2480, 3508), 60).convert("RGB")], dpi=300)
    render_first_page(scan, limits)  # the renderer process starts once, before anything is timed
    result: dict[str, object] = {
        "nested_forms_page": {
            "bytes": len(nested := nested_forms_pdf(9, 10)),
            **timed(lambda: render_first_page(nested, limits), 1),
        },
        # The first page after the kill: a new renderer process starts and opens the document.
        "next_page_after_refusal": timed(lambda: render_first_page(scan, limits), 1),
        "a4_scan_page_in_child": timed(lambda: render_first_page(scan, limits), repeat),
        "a4_scan_page_in_process": timed(lambda: render_in_process(scan, limits.pdf_dpi / 72), repeat),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compare", action="store_true", help="also time Pillow's n_frames walk")
    args = parser.parse_args()
    limits = shipped_limits()

    frames = many_frame_tiff(50_000)
    costly = many_frame_tiff(130, padding_tags=60_000)
    cases = {
        "tiff_50000_frames": (frames, args.repeat),
        "tiff_130_frames_of_60000_tags": (costly, 1),
        "tiff_200_frames": (many_frame_tiff(limits.max_pages), args.repeat),
        "pdf_200_pages": (blank_pdf(limits.max_pages), args.repeat),
    }
    result: dict[str, object] = {
        "limits": {
            "max_pages": limits.max_pages,
            "document_open_timeout_s": limits.open_timeout_s,
            "pdf_render_timeout_s": limits.render_timeout_s,
        },
    }
    for name, (data, repeat) in cases.items():
        result[name] = {"bytes": len(data), **timed(lambda data=data: open_and_check(data, limits), repeat)}
        print(name, result[name], flush=True)
    result["pdf_rendering"] = rendering(limits, args.repeat)
    print("pdf_rendering", result["pdf_rendering"], flush=True)
    if args.compare:
        started = time.perf_counter()
        counted = Image.open(io.BytesIO(frames)).n_frames
        result["pillow_n_frames_50000"] = {"frames": counted, "seconds": round(time.perf_counter() - started, 2)}
        print("pillow_n_frames_50000", result["pillow_n_frames_50000"], flush=True)

    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "documents.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
