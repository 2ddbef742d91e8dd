"""A PDF renderer child that dies as a crash in pdfium (or the OOM killer) would: it exits in
the middle of a render. ``CRASHING_PDF_RENDERER`` says when: ``always``, or ``once:PATH`` (the
first render after which PATH exists; the later ones render)."""

from __future__ import annotations

import os
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ocr_service.pdf_render_child import serve

CHILD = "tests.support.crashing_pdf_renderer"


class _Crashing:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def recv(self) -> Any:
        message = self._conn.recv()
        if message[0] == "render" and _crash_now():
            os._exit(3)
        return message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _crash_now() -> bool:
    when = os.environ["CRASHING_PDF_RENDERER"]
    if when == "always":
        return True
    marker = Path(when.removeprefix("once:"))
    if marker.exists():
        return False
    marker.touch()
    return True


if __name__ == "__main__":
    serve(_Crashing(Connection(int(sys.argv[1]))))  # type: ignore[arg-type]
