"""Benchmark: the document view of a 60-line page in the real browser (Debian's Chromium).

    .venv/bin/python bench/bench_ui.py [--views 15]

The live system of the browser tests (the OCR service with the tiny model, the backend on
SQLite, both on loopback) with one imported document: a 1600 x 2400 page image of
handwriting-like strokes and 60 lines (a Transkribus PAGE export). Each view opens
/documents/{id} and reads, from the browser's own clock (milliseconds since the navigation
started):

- ``ready``: the mark ``viewer:ready`` the page's script sets once every line is editable
  (fields wired to saving, crops placed, the polygons drawn) — the figure the target is about;
- ``dom``: DOMContentLoaded; ``image``: the page image fully received.

"cold": a fresh browser context each view (nothing cached; the page image was rendered by the
backend on its first request, before the views); "warm": reloads in one context (scripts, styles
and the image from the browser's cache, as a person going from page to page). Also the bytes of
CSS and JavaScript the page loads (decoded), and of the page's HTML. Target (issue 16): usable within 1 s; CSS+JS under
200 KB. Results are printed and written to bench/results/ui.json.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter
from playwright.sync_api import Browser, Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.backend.transcript_files import gen_page, transkribus_page, zip_of  # noqa: E402
from tests.support.learning_loop import TOKEN  # noqa: E402
from tests.support.models import tiny_baseline_model  # noqa: E402
from tests.support.processes import ADMIN, PASSWORD, Backend, OcrService, Processes, backend_env  # noqa: E402
from tests.web.support import CHROMIUM, CHROMIUM_ARGS, LiveSystem  # noqa: E402

LINES = 60
SIZE = (1600, 2400)
READ_TIMES = """() => {
  const mark = performance.getEntriesByName('viewer:ready')[0];
  const nav = performance.getEntriesByType('navigation')[0];
  const image = performance.getEntriesByType('resource').find(r => r.name.includes('/pages/1/image'));
  const code = performance.getEntriesByType('resource').filter(r => /\\/static\\/.*\\.(css|js)(\\?|$)/.test(r.name));
  return {ready: mark ? mark.startTime : null, dom: nav.domContentLoadedEventEnd,
          image: image ? image.responseEnd : null,
          codeBytes: code.reduce((sum, r) => sum + r.decodedBodySize, 0), codeFiles: code.length,
          htmlBytes: nav.decodedBodySize, htmlTransferred: nav.transferSize};
}"""


def page_zip() -> bytes:
    """A 60-line page: an image of ink strokes on paper and the PAGE XML of its lines."""
    page = gen_page(4711, "brief-60.png", lines=LINES, width=SIZE[0], height=SIZE[1])
    image = Image.new("RGB", SIZE, (236, 226, 200))
    draw = ImageDraw.Draw(image)
    for line in page.lines:
        (x0, _), (x1, base) = line.baseline[0], line.baseline[-1]
        x = x0
        while x < x1 - 40:
            width = 20 + (x * 7 + base) % 90
            draw.line([(x, base - 12), (x + width, base - 12 + (x % 13) - 6)], fill=(40, 30, 90), width=4)
            x += width + 16
    buffer = io.BytesIO()
    image.filter(ImageFilter.GaussianBlur(1)).save(buffer, "PNG")
    return zip_of({"Brief/brief-60.png": buffer.getvalue(), "Brief/page/brief-60.xml": transkribus_page(page)})


def logged_in_page(browser: Browser, live: LiveSystem) -> Page:
    context = browser.new_context(base_url=live.url, viewport={"width": 1280, "height": 900})
    login = context.request.post("/api/auth/login", data={"username": live.admin[0], "password": live.admin[1]})
    assert login.ok, login.text()
    return context.new_page()


def view(page: Page, url: str, reload: bool = False) -> dict[str, Any]:
    if reload:
        page.reload()
    else:
        page.goto(url)
    page.wait_for_selector("html[data-viewer-ready]")
    page.wait_for_function("() => document.querySelector('.stage__image').complete")
    times: dict[str, Any] = page.evaluate(READ_TIMES)
    assert page.locator("ol.lines > li textarea").count() == LINES
    return times


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        key: {
            "median_ms": round(statistics.median(s[key] for s in samples), 1),
            "max_ms": round(max(s[key] for s in samples), 1),
        }
        for key in ("ready", "dom", "image")
    }


def run(views: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-ui-") as folder:
        tmp = Path(folder)
        processes = Processes(tmp)
        try:
            ocr = OcrService(processes, tmp / "ocr", tiny_baseline_model(), model_name="hand-a")
            ocr.start_process(OCR_TRAINING_TOKEN=TOKEN, OCR_WORKERS="1")
            env = backend_env(tmp, f"sqlite:///{tmp / 'backend.db'}", ocr.url)
            backend = Backend(processes, env).start()
            live = LiveSystem(backend.url, (ADMIN, PASSWORD), (ADMIN, PASSWORD), ocr.url)
            with live.api() as client:
                upload = {"file": ("brief.zip", page_zip(), "application/zip")}
                made = client.post("/api/imports", files=upload, data={"title": "Brief"})
                assert made.status_code == 201, made.text
                document_id = made.json()["documents"][0]["id"]
                # The backend renders a page's image on its first request; a person's first view pays
                # that once (bench_pages.py measures it), every later one reads the stored WebP.
                first = time.perf_counter()
                assert client.get(f"/api/documents/{document_id}/pages/1/image").status_code == 200
                render_s = time.perf_counter() - first
            url = f"/documents/{document_id}"
            with sync_playwright() as driver:
                browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                cold = []
                for _ in range(views):
                    page = logged_in_page(browser, live)
                    cold.append(view(page, url))
                    page.context.close()
                page = logged_in_page(browser, live)
                view(page, url)
                warm = [view(page, url, reload=True) for _ in range(views)]
                page.context.close()
                browser.close()
        finally:
            processes.kill_all()
    return {
        "lines": LINES,
        "image_px": list(SIZE),
        "views": views,
        "first_image_render_s": round(render_s, 2),
        "cold": summary(cold),
        "warm": summary(warm),
        "css_js_bytes": cold[0]["codeBytes"],
        "css_js_files": cold[0]["codeFiles"],
        # The page itself (decoded; and as sent, headers included): the HTML is never cached.
        "html_bytes": cold[0]["htmlBytes"],
        "html_transferred_bytes": cold[0]["htmlTransferred"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=15)
    result = run(parser.parse_args().views)
    print(json.dumps(result, indent=1))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ui.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
