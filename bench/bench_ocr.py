"""Benchmark: a 6-page synthetic PDF through the OCR service vs kraken's API page after page.

    .venv/bin/python bench/bench_ocr.py [--pages 6] [--lines 20]

1. Sequential baseline: one process, kraken's Python API (blla + the same recognition
   model), torch on all cores, pages rasterised with the same DPI, one after another.
2. The service: ``python -m ocr_service`` as its own process on 127.0.0.1 (the production
   wiring), ``POST /ocr`` with the whole PDF; then ``POST /ocr/stream`` for the time to the
   first line; then a 1-page document for one page's processing time in the service.

Results are printed and written to bench/results/ocr.json. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.models import tiny_recognition_model  # noqa: E402
from tests.support.synthetic import page_texts, render_page, to_pdf  # noqa: E402

DPI = 150


def make_pdf(pages: int, lines: int) -> bytes:
    images = [
        render_page(page_texts(100 + i, lines, 6), width=1240, height=1754, font_size=34, line_gap=2.0).image
        for i in range(pages)
    ]
    return to_pdf(images, dpi=DPI)


def sequential(pdf: bytes, model: Path) -> dict[str, float]:
    """kraken's own API, page after page, in this process."""
    import pypdfium2 as pdfium
    from kraken.configs import RecognitionInferenceConfig, SegmentationInferenceConfig
    from kraken.tasks import RecognitionTaskModel, SegmentationTaskModel

    seg_model = SegmentationTaskModel.load_model()
    rec_model = RecognitionTaskModel.load_model(str(model))
    seg_config = SegmentationInferenceConfig(accelerator="cpu", device="auto")
    rec_config = RecognitionInferenceConfig(accelerator="cpu", device="auto", num_line_workers=0)
    document = pdfium.PdfDocument(pdf)
    per_page = []
    lines = 0
    started = time.perf_counter()
    for index in range(len(document)):
        t0 = time.perf_counter()
        image = document[index].render(scale=DPI / 72).to_pil().convert("RGB")
        seg = seg_model.predict(image, seg_config)
        feed = seg.to_bbox() if rec_model.seg_type == "bbox" else seg
        lines += len(list(rec_model.predict(image, feed, rec_config)))
        per_page.append(time.perf_counter() - t0)
    total = time.perf_counter() - started
    return {
        "seconds": total,
        "pagesPerMinute": len(per_page) * 60 / total,
        "secondsPerPage": total / len(per_page),
        "firstPageSeconds": per_page[0],
        "lines": lines,
    }


def service(pdf: bytes, one_page_pdf: bytes, model: Path) -> dict[str, float]:
    store = Path(tempfile.mkdtemp(prefix="bench-models-"))
    shutil.copyfile(model, store / "tiny.safetensors")
    port = 18931
    env = dict(
        os.environ,
        OCR_MODELS_DIR=str(store),
        OCR_PORT=str(port),
        OCR_DEFAULT_MODEL="tiny",
        OCR_PDF_DPI=str(DPI),
        OCR_LOG_LEVEL="WARNING",
    )
    process = subprocess.Popen([sys.executable, "-m", "ocr_service"], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=900) as client:
            deadline = time.monotonic() + 300
            while True:
                try:
                    health = client.get("/health")
                    if health.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the service did not become healthy")
                time.sleep(0.5)
            workers = health.json()["workers"]
            # Warm-up: every worker has read a page once (lazy model loads are not measured).
            client.post("/ocr", files={"file": ("warm.pdf", pdf)})

            t0 = time.perf_counter()
            response = client.post("/ocr", files={"file": ("bench.pdf", pdf)})
            total = time.perf_counter() - t0
            response.raise_for_status()
            pages = len(response.json()["pages"])
            lines = sum(len(p["lines"]) for p in response.json()["pages"])

            t0 = time.perf_counter()
            first_line = None
            with client.stream("POST", "/ocr/stream", files={"file": ("bench.pdf", pdf)}) as stream:
                for raw in stream.iter_lines():
                    if raw and first_line is None and json.loads(raw)["type"] == "line":
                        first_line = time.perf_counter() - t0
            stream_total = time.perf_counter() - t0

            t0 = time.perf_counter()
            client.post("/ocr", files={"file": ("one.pdf", one_page_pdf)}).raise_for_status()
            one_page = time.perf_counter() - t0
    finally:
        process.terminate()
        process.wait(60)
        shutil.rmtree(store, ignore_errors=True)
    return {
        "seconds": total,
        "pagesPerMinute": pages * 60 / total,
        "lines": lines,
        "workers": workers,
        "streamFirstLineSeconds": first_line or float("nan"),
        "streamSeconds": stream_total,
        "onePageSeconds": one_page,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--lines", type=int, default=20)
    args = parser.parse_args()
    model = tiny_recognition_model("safetensors")
    pdf = make_pdf(args.pages, args.lines)
    one_page = make_pdf(1, args.lines)

    base = sequential(pdf, model)
    print(f"sequential kraken API: {base['seconds']:.1f} s, {base['pagesPerMinute']:.2f} pages/min", flush=True)
    svc = service(pdf, one_page, model)
    result = {
        "machine": {"cores": os.cpu_count()},
        "document": {"pages": args.pages, "linesPerPage": args.lines, "dpi": DPI},
        "sequential": base,
        "service": svc,
        "speedup": svc["pagesPerMinute"] / base["pagesPerMinute"],
        "firstLineVsServiceOnePage": svc["streamFirstLineSeconds"] / svc["onePageSeconds"],
        "firstLineVsSequentialPage": svc["streamFirstLineSeconds"] / base["secondsPerPage"],
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ocr.json").write_text(json.dumps(result, indent=2))
    print(
        f"\nservice {svc['pagesPerMinute']:.2f} pages/min vs sequential {base['pagesPerMinute']:.2f} pages/min: "
        f"{result['speedup']:.2f}x (target >= 1.4x)\n"
        f"first streamed line after {svc['streamFirstLineSeconds']:.1f} s; one page in the service "
        f"{svc['onePageSeconds']:.1f} s ({result['firstLineVsServiceOnePage']:.2f}x, target <= 1.2x); "
        f"sequential page {base['secondsPerPage']:.1f} s ({result['firstLineVsSequentialPage']:.2f}x)"
    )


if __name__ == "__main__":
    main()
