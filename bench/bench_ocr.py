"""Benchmark: the OCR service against kraken's own loop, for one page alone and for six pages.

    .venv/bin/python bench/bench_ocr.py [--pages 6] [--lines 20] [--repeats 3]

Generated pages (tests/support/synthetic.py: A4 at 150 dpi, printed lines, the tiny test
recognition model): no real scan can be downloaded on the build machines.

1. In-process kraken: this process, kraken's Python API (blla + the same recognition model),
   torch on every core, pages rasterised at the same DPI, one after another.
2. The service: ``python -m ocr_service`` as its own process on 127.0.0.1 (the production
   wiring), over HTTP.

Figures, each the median of ``--repeats`` runs taken turn about (kraken, service, kraken, …)
so that a busy neighbour on a shared machine slows both sides alike:

- one page: a 1-page PDF through ``POST /ocr`` vs the same page in-process
  (target: the service at most 5 % slower; a page alone may use every core);
- six pages: the whole PDF through ``POST /ocr`` vs in-process page after page
  (target: the service at least 1.4x as fast, its workers reading pages side by side);
- the first line of ``POST /ocr/stream`` for the six pages.

Results are printed and written to bench/results/ocr.json. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.models import tiny_recognition_model  # noqa: E402
from tests.support.servers import wait_until_healthy  # noqa: E402
from tests.support.synthetic import page_texts, render_page, to_pdf  # noqa: E402

DPI = 150


def make_pdf(pages: int, lines: int, *, width: int = 1240, words: int = 6) -> bytes:
    """A4 pages at 150 dpi (``width`` narrower for a quick run: blla reads every page at 1800 px
    high, so its time grows with the width)."""
    images = [
        render_page(page_texts(100 + i, lines, words), width=width, height=1754, font_size=34, line_gap=2.0).image
        for i in range(pages)
    ]
    return to_pdf(images, dpi=DPI)


class InProcessKraken:
    """kraken's own API, page after page, in this process: what the service is measured against."""

    def __init__(self, model: Path | None) -> None:
        from kraken.configs import RecognitionInferenceConfig, SegmentationInferenceConfig
        from kraken.tasks import RecognitionTaskModel, SegmentationTaskModel

        self.seg_model = SegmentationTaskModel.load_model()
        self.rec_model = RecognitionTaskModel.load_model(str(model)) if model else None
        self.seg_config = SegmentationInferenceConfig(accelerator="cpu", device="auto")
        self.rec_config = RecognitionInferenceConfig(accelerator="cpu", device="auto", num_line_workers=0)

    def read(self, pdf: bytes) -> dict[str, float]:
        import pypdfium2 as pdfium

        document = pdfium.PdfDocument(pdf)
        lines = 0
        started = time.perf_counter()
        for index in range(len(document)):
            image = document[index].render(scale=DPI / 72).to_pil().convert("RGB")
            seg = self.seg_model.predict(image, self.seg_config)
            if self.rec_model is None:
                lines += len(seg.lines)
                continue
            feed = seg.to_bbox() if self.rec_model.seg_type == "bbox" else seg
            lines += len(list(self.rec_model.predict(image, feed, self.rec_config)))
        seconds = time.perf_counter() - started
        pages = len(document)
        document.close()
        return {"seconds": seconds, "pages": pages, "lines": lines}


@contextmanager
def running_service(model: Path | None) -> Iterator[httpx.Client]:
    store = Path(tempfile.mkdtemp(prefix="bench-models-"))
    ports = []
    for _ in range(2):  # free ports (public and management): other benchmarks may run on this machine
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    port, management = ports
    env = dict(os.environ, OCR_MODELS_DIR=str(store), OCR_PORT=str(port), OCR_PDF_DPI=str(DPI), OCR_LOG_LEVEL="WARNING")
    env["OCR_MANAGEMENT_PORT"] = str(management)
    if model is not None:
        shutil.copyfile(model, store / "tiny.safetensors")
        env["OCR_DEFAULT_MODEL"] = "tiny"
    process = subprocess.Popen([sys.executable, "-m", "ocr_service"], env=env, cwd=ROOT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=900) as client:
            wait_until_healthy(client, 300)
            yield client
    finally:
        process.terminate()
        process.wait(60)
        shutil.rmtree(store, ignore_errors=True)


def through_service(client: httpx.Client, pdf: bytes) -> dict[str, float]:
    started = time.perf_counter()
    response = client.post("/ocr", files={"file": ("bench.pdf", pdf)})
    seconds = time.perf_counter() - started
    response.raise_for_status()
    pages = response.json()["pages"]
    return {"seconds": seconds, "pages": len(pages), "lines": sum(len(p["lines"]) for p in pages)}


def first_streamed_line(client: httpx.Client, pdf: bytes) -> dict[str, float]:
    started = time.perf_counter()
    first_line: float | None = None
    with client.stream("POST", "/ocr/stream", files={"file": ("bench.pdf", pdf)}) as stream:
        for raw in stream.iter_lines():
            if raw and first_line is None and json.loads(raw)["type"] == "line":
                first_line = time.perf_counter() - started
    if first_line is None:
        raise RuntimeError("the stream sent no line")
    return {"firstLineSeconds": first_line, "seconds": time.perf_counter() - started}


def turn_about(repeats: int, *runs: Callable[[], dict[str, float]]) -> list[dict[str, Any]]:
    """Each run ``repeats`` times, taking turns; the median seconds of each, with every figure."""
    figures: list[list[dict[str, float]]] = [[] for _ in runs]
    for _ in range(repeats):
        for index, run in enumerate(runs):
            figures[index].append(run())
            print(f"  {index}: {figures[index][-1]['seconds']:.1f} s", flush=True)
    return [
        {**f[0], "seconds": statistics.median(x["seconds"] for x in f), "runs": [x["seconds"] for x in f]}
        for f in figures
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--lines", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--segmentation-only",
        action="store_true",
        help="no recognition model on either side (blla alone, most of a page's time): for a machine "
        "where the tiny test model is not trained yet",
    )
    args = parser.parse_args()
    model = None if args.segmentation_only else tiny_recognition_model("safetensors")
    pdf = make_pdf(args.pages, args.lines)
    one_page = make_pdf(1, args.lines)

    with running_service(model) as client:
        health = client.get("/health").json()
        kraken = InProcessKraken(model)
        # Warm-up: both sides have read pages once (lazy loads and first-call costs not measured).
        through_service(client, pdf)
        kraken.read(one_page)

        print("one page: in-process kraken, then the service", flush=True)
        alone_kraken, alone_service = turn_about(
            args.repeats, lambda: kraken.read(one_page), lambda: through_service(client, one_page)
        )
        print(f"{args.pages} pages: in-process kraken page after page, then the service", flush=True)
        batch_kraken, batch_service = turn_about(
            max(1, args.repeats - 1), lambda: kraken.read(pdf), lambda: through_service(client, pdf)
        )
        stream = first_streamed_line(client, pdf)

    one_page_ratio = alone_service["seconds"] / alone_kraken["seconds"]
    speedup = batch_kraken["seconds"] / batch_service["seconds"]
    result = {
        "machine": {"cores": os.cpu_count(), "loadAverage": os.getloadavg()},
        "document": {"pages": args.pages, "linesPerPage": args.lines, "dpi": DPI, "kind": "generated"},
        "recognitionModel": "tiny test model" if model else None,
        "service": {"workers": health["workers"], "threadsPerWorker": health["threadsPerWorker"]},
        "onePage": {"inProcessKraken": alone_kraken, "service": alone_service, "serviceOverKraken": one_page_ratio},
        "pages": {
            "inProcessKraken": batch_kraken,
            "service": batch_service,
            "speedup": speedup,
            "pagesPerMinute": {
                "inProcessKraken": args.pages * 60 / batch_kraken["seconds"],
                "service": args.pages * 60 / batch_service["seconds"],
            },
        },
        "stream": stream,
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ocr.json").write_text(json.dumps(result, indent=2))
    print(
        f"\none page: service {alone_service['seconds']:.1f} s vs in-process kraken {alone_kraken['seconds']:.1f} s "
        f"= {one_page_ratio:.3f}x (target <= 1.05x)\n"
        f"{args.pages} pages: service {batch_service['seconds']:.1f} s vs in-process kraken "
        f"{batch_kraken['seconds']:.1f} s = {speedup:.2f}x faster (target >= 1.4x)\n"
        f"first streamed line after {stream['firstLineSeconds']:.1f} s "
        f"({stream['firstLineSeconds'] / alone_service['seconds']:.2f}x one page in the service)"
    )


if __name__ == "__main__":
    main()
