"""Benchmark: starting OCR with the breaker open vs with the OCR service down and the breaker closed.

    .venv/bin/python bench/bench_ocr_client.py [--open-calls 2000] [--down-calls 3]

Both start the same call, ``OcrClient.ocr_document`` with a 1 MB document, the first thing a
request to start OCR does (target: breaker open < 20 ms):

1. Breaker open: a scripted stand-in OCR service on 127.0.0.1 answers 500 until the breaker
   opens and is then stopped; every call is refused by the breaker (CIRCUIT_OPEN, checked)
   without touching the network.
2. Service down, breaker closed: the URL points at a port nobody listens on; every call
   makes its 4 attempts with the real back-off (2 s, 4 s, 8 s) before it gives up.

Results are printed and written to bench/results/ocr_client.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.ocr_client import (  # noqa: E402
    BreakerConfig,
    BreakerState,
    OcrClient,
    OcrClientConfig,
    OcrUnavailable,
    Unavailability,
)
from tests.backend.ocr_standin import Reply, start_standin  # noqa: E402


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "calls": len(ordered),
        "p50_ms": round(1000 * statistics.median(ordered), 3),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
        "max_ms": round(1000 * ordered[-1], 3),
    }


async def _time_calls(client: OcrClient, document: Path, calls: int, reason: Unavailability) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        try:
            await client.ocr_document(document)
        except OcrUnavailable as exc:
            if exc.reason is not reason:
                raise RuntimeError(f"expected {reason}, got {exc.reason}") from exc
        else:
            raise RuntimeError("the call was expected to fail")
        samples.append(time.perf_counter() - started)
    return samples


async def breaker_open(document: Path, calls: int) -> dict[str, float]:
    standin = start_standin()
    standin.service.plan("POST /ocr", *[Reply(500)] * 20)
    config = OcrClientConfig(urls=(standin.url,), attempts=1, breaker=BreakerConfig(window_size=5, minimum_calls=5))
    async with OcrClient(config, CollectorRegistry()) as client:
        try:
            while client.state().state is not BreakerState.OPEN:
                await _time_calls(client, document, 1, Unavailability.RETRIES_EXHAUSTED)
        finally:
            # Gone before the timing: its thread would compete for the GIL, and a call that
            # touched the network now would fail with a connection error, not CIRCUIT_OPEN.
            standin.stop()
        return _ms(await _time_calls(client, document, calls, Unavailability.CIRCUIT_OPEN))


async def service_down(document: Path, calls: int) -> dict[str, float]:
    config = OcrClientConfig(urls=(f"http://127.0.0.1:{_free_port()}",))
    samples = []
    for _ in range(calls):
        # A fresh client each time: with the default window, the third call's attempts would
        # already find the breaker open — which is the point of having one.
        async with OcrClient(config, CollectorRegistry()) as client:
            samples += await _time_calls(client, document, 1, Unavailability.RETRIES_EXHAUSTED)
    return _ms(samples)


async def main(open_calls: int, down_calls: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as folder:
        document = Path(folder) / "letter.pdf"
        document.write_bytes(bytes(1024 * 1024))
        return {
            "breaker_open": await breaker_open(document, open_calls),
            "service_down_breaker_closed": await service_down(document, down_calls),
        }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--open-calls", type=int, default=2000)
    parser.add_argument("--down-calls", type=int, default=3)
    args = parser.parse_args()
    results = asyncio.run(main(args.open_calls, args.down_calls))
    print(json.dumps(results, indent=2))
    out = ROOT / "bench" / "results" / "ocr_client.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
