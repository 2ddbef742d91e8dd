"""Benchmark: the OCR service's own memory with a full queue of large PDFs, and clients that leave.

    .venv/bin/python bench/bench_memory.py [--pages 3] [--hold 45] [--workers 1]

1. Starts ``python -m ocr_service`` (the production wiring, default OCR_PAGE_MEMORY_MB and
   OCR_QUEUE_SIZE) and fills every place in its queue with A4 pages at 300 dpi whose content is
   a full-page noise scan (incompressible: several MB per page in the PDF, and pdfium decodes a
   full-page image for every page it renders). The clients send everything, then read nothing.
2. A further client declares a 100 MB upload: it is answered 503 after its headers alone.
3. While the queue is full, the service process's resident memory is sampled, and its peak
   (the kernel's high-water mark, VmHWM) is reported against SERVICE_BASE_MEMORY_MB. The
   worker processes are not counted: each is budgeted on its own (Settings.worker_memory_mb).
4. Every client hangs up at once: the time until every place is free, and until all page memory
   is (a page in a worker keeps its memory until the worker is done with it). Then one client
   of a plain ``/ocr`` alone, whose page is in a worker: the same two times (without disconnect
   detection its place was not free before the whole document was read).

No recognition model is installed: the pages are segmented only, which is all the service
process sees of them. Results are printed and written to bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocr_service.admission import page_cost  # noqa: E402
from ocr_service.settings import SERVICE_BASE_MEMORY_MB, Settings  # noqa: E402
from tests.support.servers import wait_until_healthy  # noqa: E402
from tests.support.synthetic import font, page_texts  # noqa: E402

A4_300DPI = (2480, 3508)
MB = 1024 * 1024


def heavy_page(seed: int) -> Image.Image:
    """An A4 scan at 300 dpi: paper noise in three channels, with lines of text over it."""
    width, height = A4_300DPI
    channels = [Image.effect_noise((width, height), 40 + 10 * ((seed + i) % 3)) for i in range(3)]
    page = Image.merge("RGB", channels)
    draw = ImageDraw.Draw(page)
    for row, text in enumerate(page_texts(seed, 30, 6)):
        draw.text((200, 200 + row * 100), text, font=font(60), fill="black")
    return page


def heavy_pdf(pages: int, seed: int) -> bytes:
    buffer = io.BytesIO()
    first, *rest = [heavy_page(seed + i) for i in range(pages)]
    first.save(buffer, format="PDF", save_all=True, append_images=rest, resolution=300, quality=95)
    return buffer.getvalue()


def multipart(path: str, host: str, data: bytes) -> tuple[bytes, bytes]:
    request = httpx.Request("POST", f"http://{host}{path}", files={"file": ("scan.pdf", data)})
    body = request.read()
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in request.headers.items()) + "\r\n"
    return head.encode("latin-1"), body


def high_water_mark_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc (Linux only)")


class Sampler(threading.Thread):
    """The service's resident memory and its page memory, every few milliseconds."""

    def __init__(self, pid: int, url: str) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.url = url
        self.stop = threading.Event()
        self.peak_rss_mb = 0.0
        self.peak_page_memory_mb = 0.0

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                self.peak_rss_mb = max(self.peak_rss_mb, self.process.memory_info().rss / MB)
                queue = client.get("/health").json()["queue"]
                held = queue.get("pageMemory", {}).get("heldBytes", 0)
                self.peak_page_memory_mb = max(self.peak_page_memory_mb, held / MB)
                time.sleep(0.02)


def wait_for(
    client: httpx.Client, active: Callable[[int], bool], pages_held: bool | None = None, within_s: float = 120
) -> float | None:
    """Seconds until /health's queue has ``active(documents)`` and, unless None, page memory
    held or not; None if that does not come within ``within_s``."""
    started = time.perf_counter()
    while True:
        queue = client.get("/health").json()["queue"]
        # A service from before page memory has no such figure.
        held = queue.get("pageMemory", {"heldBytes": 0})["heldBytes"] > 0
        if active(queue["active"]) and (pages_held is None or held == pages_held):
            return time.perf_counter() - started
        if time.perf_counter() - started > within_s:
            return None
        time.sleep(0.005)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the service; a worker busy with a page of a client that left may hold it up."""
    children = psutil.Process(process.pid).children(recursive=True)
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
    for child in children:
        if child.is_running():
            child.kill()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(pages: int, hold_s: float, workers: int, code: Path) -> dict[str, object]:
    store = Path(tempfile.mkdtemp(prefix="bench-memory-models-"))
    port = free_port()
    host = f"127.0.0.1:{port}"
    env = dict(
        os.environ,
        OCR_MODELS_DIR=str(store),
        OCR_PORT=str(port),
        OCR_MANAGEMENT_PORT=str(free_port()),
        OCR_WORKERS=str(workers),
        OCR_LOG_LEVEL="WARNING",
    )
    settings = Settings(models_dir=store, workers=workers)
    print("generating the documents ...", flush=True)
    documents = [heavy_pdf(pages, seed) for seed in range(3)]
    process = subprocess.Popen([sys.executable, "-m", "ocr_service"], env=dict(env, PYTHONPATH=str(code)), cwd=code)
    sockets: list[socket.socket] = []
    try:
        with httpx.Client(base_url=f"http://{host}", timeout=60) as client:
            wait_until_healthy(client, 600)
            queue = client.get("/health").json()["queue"]
            idle_rss = psutil.Process(process.pid).memory_info().rss / MB
            sampler = Sampler(process.pid, f"http://{host}")
            sampler.start()

            uploaded = 0
            for number in range(queue["limit"]):
                head, body = multipart("/ocr/stream", host, documents[number % len(documents)])
                sock = socket.create_connection(("127.0.0.1", port))
                sock.sendall(head + body)
                uploaded += len(body)
                sockets.append(sock)
            wait_for(client, lambda n: n == queue["limit"])

            # One more, declaring a 100 MB upload: the answer comes after the headers alone.
            late = socket.create_connection(("127.0.0.1", port))
            late.settimeout(30)
            t0 = time.perf_counter()
            late.sendall(
                f"POST /ocr HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                f"Content-Length: {100 * MB}\r\n\r\n".encode()
            )
            try:
                answer = late.recv(65536).decode("latin-1")
                busy_after_headers_s: float | None = time.perf_counter() - t0
            except TimeoutError:
                answer, busy_after_headers_s = "no answer without the body", None
            late.close()

            time.sleep(hold_s)
            sampler.stop.set()
            sampler.join()
            peak_hwm = high_water_mark_mb(process.pid)

            t0 = time.perf_counter()
            for sock in sockets:
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            sockets.clear()
            all_free_s = wait_for(client, lambda n: n == 0)
            # A page in a worker keeps its page memory until the worker is done with it.
            all_memory_free_s = wait_for(client, lambda n: n == 0, pages_held=False, within_s=600)

            # A plain /ocr this time: nothing is sent back before the whole document is read.
            head, body = multipart("/ocr", host, documents[0])
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(head + body)
            one_free_s = one_memory_free_s = None
            if all_free_s is not None:
                wait_for(client, lambda n: n == 1)
                time.sleep(5)  # its first page is in a worker by now
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
                one_free_s = wait_for(client, lambda n: n == 0)
                one_memory_free_s = wait_for(client, lambda n: n == 0, pages_held=False, within_s=600)
            sockets.append(sock)
    finally:
        for sock in sockets:
            sock.close()
        stop(process)
        shutil.rmtree(store, ignore_errors=True)
    return {
        "documents": queue["limit"],
        "pagesPerDocument": pages,
        "workers": workers,
        "uploadedMB": round(uploaded / MB, 1),
        "pageCostMB": round(page_cost(A4_300DPI[0] * A4_300DPI[1]) / MB, 1),
        "pageMemoryLimitMB": round(settings.page_memory_bytes / MB),
        "peakPageMemoryMB": round(sampler.peak_page_memory_mb, 1),
        "idleRssMB": round(idle_rss, 1),
        "peakRssSampledMB": round(sampler.peak_rss_mb, 1),
        "peakRssHighWaterMarkMB": round(peak_hwm, 1),
        "serviceBudgetMB": SERVICE_BASE_MEMORY_MB,
        "busyAnswer": answer.split("\r\n")[0],
        "busyAfterHeadersSeconds": _round(busy_after_headers_s),
        "allClientsLeftFreeSeconds": _round(all_free_s),
        "oneClientLeftFreeSeconds": _round(one_free_s),
        "allClientsLeftPageMemoryFreeSeconds": _round(all_memory_free_s),
        "oneClientLeftPageMemoryFreeSeconds": _round(one_memory_free_s),
    }


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=3, help="pages per document")
    parser.add_argument("--hold", type=float, default=45, help="seconds the queue is kept full")
    parser.add_argument("--workers", type=int, default=1, help="OCR_WORKERS of the service")
    parser.add_argument(
        "--code", type=Path, default=ROOT, help="folder holding the ocr_service to measure (e.g. an older checkout)"
    )
    args = parser.parse_args()
    result = run(args.pages, args.hold, args.workers, args.code.resolve())
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = "memory.json" if args.code.resolve() == ROOT else "memory-other.json"
    (out / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
