"""``python -m tests.support.traced_ocr_service``: the real OCR service, with a trace and a hold.

The fault tests (tests/backend/test_faults_e2e.py) kill processes in the middle of a document.
Where a document breaks must not be left to timing on a loaded machine, so this entry point
runs ``ocr_service``'s own ``main`` with two small additions, set by environment variables:

- ``FAULT_TRACE`` (a file): one JSON line per reading of a document (``run``: its number in
  the order readings began, ``sha256`` of the document's bytes — the backend's checksum of
  the original —, ``pages``, and the page range read, ``first`` and ``stop`` from 0) and one
  per page decoded (``run``, ``index``), held (``held``) or read (``run``, ``page`` from 1,
  ``texts``: its lines' text in order). The tests learn from it which pages each reading asked
  for, and what the service read on each page, without trusting what the backend says.
- ``FAULT_HOLD`` (JSON ``{"<sha256>": index}``) and ``FAULT_RELEASE`` (a file): the first
  reading of each listed document waits before it decodes page ``index`` (from 0) until the
  release file exists. The wait is asynchronous, so every other document goes on; the pages
  before ``index`` are streamed, so the backend has stored exactly the pages before
  ``index - 1`` while it waits (a page is stored when the next one begins).

Everything else — the HTTP API, the worker processes, kraken — is the service as it ships.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

from ocr_service import ocr
from ocr_service.__main__ import main
from ocr_service.admission import Reservation
from ocr_service.documents import Document

POLL_S = 0.05


class Trace:
    def __init__(self, path: Path, hold: dict[str, int], release: Path | None) -> None:
        self.path = path
        self.hold = hold
        self.release = release
        self.held_once: set[str] = set()
        self.runs = 0
        self._lock = threading.Lock()

    def write(self, entry: dict[str, Any]) -> None:
        with self._lock, self.path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(entry) + "\n")

    def new_run(self, sha256: str, pages: int, indices: range) -> tuple[int, int | None]:
        """The reading's number, and the page it is held at (None: not held)."""
        with self._lock:
            run = self.runs
            self.runs += 1
            held = sha256 in self.hold and sha256 not in self.held_once
            if held:
                self.held_once.add(sha256)
        self.write({"run": run, "sha256": sha256, "pages": pages, "first": indices.start, "stop": indices.stop})
        return run, self.hold[sha256] if held else None

    async def wait_for_release(self, run: int, index: int) -> None:
        self.write({"held": run, "index": index})
        assert self.release is not None, "FAULT_HOLD needs FAULT_RELEASE"
        while not self.release.exists():
            await asyncio.sleep(POLL_S)


def _digest(data: bytes | BinaryIO) -> str:
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    position = data.tell()
    data.seek(0)
    digest = hashlib.file_digest(data, "sha256").hexdigest()  # type: ignore[arg-type]
    data.seek(position)
    return digest


def install(trace: Trace) -> None:
    open_document = Document.__init__
    start_run = ocr.OcrRun.__init__
    decode = ocr.OcrRun._decode
    events = ocr.OcrRun.events

    def document_init(self: Document, data: bytes | BinaryIO, *args: Any, **kwargs: Any) -> None:
        self.fault_sha256 = _digest(data)  # type: ignore[attr-defined]
        open_document(self, data, *args, **kwargs)

    def run_init(self: ocr.OcrRun, document: Document, *args: Any) -> None:
        start_run(self, document, *args)
        sha256: str = getattr(document, "fault_sha256", "")
        self.fault_run, self.fault_hold = trace.new_run(sha256, document.page_count, self.indices)  # type: ignore[attr-defined]

    async def traced_decode(self: ocr.OcrRun, index: int, reservation: Reservation) -> Image.Image:
        run: int = self.fault_run  # type: ignore[attr-defined]
        if index == self.fault_hold:  # type: ignore[attr-defined]
            await trace.wait_for_release(run, index)
        trace.write({"run": run, "index": index})
        return await decode(self, index, reservation)

    async def traced_events(self: ocr.OcrRun) -> AsyncIterator[ocr.PageStarted | ocr.PageDone]:
        async for event in events(self):
            if isinstance(event, ocr.PageDone):
                texts = [line.text for line in event.result.lines]
                trace.write({"run": self.fault_run, "page": event.page, "texts": texts})  # type: ignore[attr-defined]
            yield event

    Document.__init__ = document_init  # type: ignore[method-assign]
    ocr.OcrRun.__init__ = run_init  # type: ignore[method-assign,assignment]
    ocr.OcrRun._decode = traced_decode  # type: ignore[method-assign]
    ocr.OcrRun.events = traced_events  # type: ignore[method-assign]


if __name__ == "__main__":
    release = os.environ.get("FAULT_RELEASE")
    install(
        Trace(
            Path(os.environ["FAULT_TRACE"]),
            {str(sha): int(index) for sha, index in json.loads(os.environ.get("FAULT_HOLD", "{}")).items()},
            Path(release) if release else None,
        )
    )
    sys.exit(main(sys.argv[1:]))
