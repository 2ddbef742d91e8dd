"""Benchmark: one OCR worker's peak memory by the page's width at blla's 1800 px height.

    .venv/bin/python bench/bench_worker_memory.py [--widths 1273 2546 3700] [--height 2480]
    .venv/bin/python bench/bench_worker_memory.py --widths 3700 --height 5400   # 60 MP

For each width a fresh process builds the worker's engine (``PageEngine``: the packaged blla
and the tiny test recognition model, torch on one thread) and reads one page: a scan
``--height`` px high (2480 = an A4 page's short side at 300 dpi) whose width makes blla's
input, once scaled to 1800 px height, the given width; full of text lines, so every part of
the pipeline runs. Reported: the process's peak resident memory (the kernel's high-water
mark, VmHWM) after loading the models and after the page, against ``worker_memory_mb`` for
that width and page size (what ``OCR_MAX_SEGMENTATION_WIDTH`` and ``OCR_MAX_PAGE_PIXELS`` at
those values would reserve per worker); exit code 1 if a peak is over it. Results are printed and
written to bench/results/worker_memory.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocr_service.settings import worker_memory_mb  # noqa: E402

# Run in a child per width: a high-water mark never goes down, so one process per page.
CHILD = """
import json, sys, time
from pathlib import Path
from PIL import Image, ImageDraw
from ocr_service.engine.pipeline import PageEngine
from ocr_service.model_ref import ModelRef
from tests.support.models import tiny_recognition_model
from tests.support.synthetic import font, page_texts

def hwm():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

width, height = int(sys.argv[1]), int(sys.argv[2])
model = tiny_recognition_model("safetensors")
engine = PageEngine(None)
engine.use_threads(1)
ref = ModelRef.of_file("tiny", model)
engine.recognizer(ref)
loaded = hwm()
page = Image.new("RGB", (width, height), "white")
draw = ImageDraw.Draw(page)
size = max(20, height // 60)
for row, text in enumerate(page_texts(width, height // (2 * size) - 2, max(3, width // (size * 8)))):
    draw.text((size * 2, size * (2 + 2 * row)), text, font=font(size), fill="black")
started = time.perf_counter()
result = engine.process(page, ref, None)
print(json.dumps({"loadedMB": round(loaded), "peakMB": round(hwm()), "lines": len(result.lines),
                  "seconds": round(time.perf_counter() - started, 1)}))
"""


def measure(segmentation_width: int, height: int) -> dict[str, object]:
    width = round(segmentation_width * height / 1800)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(width), str(height)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "segmentationWidth": segmentation_width,
        "page": f"{width}x{height}",
        **figures,
        "reservedMB": worker_memory_mb(segmentation_width, width * height),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[1273, 2546, 3700])
    parser.add_argument("--height", type=int, default=2480)
    args = parser.parse_args()
    rows = []
    for width in args.widths:
        started = time.perf_counter()
        row = measure(width, args.height)
        rows.append(row)
        print(json.dumps(row), f"({time.perf_counter() - started:.0f} s)", flush=True)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "worker_memory.json").write_text(json.dumps(rows, indent=2) + "\n")
    over = [r for r in rows if int(str(r["peakMB"])) > int(str(r["reservedMB"]))]
    sys.exit(1 if over else 0)


if __name__ == "__main__":
    main()
