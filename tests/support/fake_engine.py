"""A stand-in for kraken inside real worker processes, so the pool's tests run in seconds.

Each page carries what the engine should do with it in ``image.info["fake-engine"]`` (JSON;
pickled with the image; a page that came over HTTP carries them in its first row of pixels):

- ``do``: ``ok`` (one line whose text is the page's name), ``kill`` (SIGKILL itself, as the
  kernel's OOM killer would), ``exit`` (``os._exit``, as a crash in C code), ``kill-once`` (kill
  on the first try only), ``hang`` (sleep past any limit), ``hang-unwatched`` (disarm the
  worker's watchdog, then hang), ``fail`` (raise an unforeseen error), ``wrong-kind``;
- ``page``: its name; ``log``: a folder where every try of a page appends one line
  ``{"page", "pid", "threads"}`` to ``tries.jsonl``; ``gate``: a file the page waits for
  before it finishes (to hold a worker busy without guessing a time).

``use_threads`` is recorded per page, so the tests see the threads the pool lent a page. A
worker whose segmentation model file is named ``refuse-*`` fails to start while a file
``refuse`` lies beside it.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from PIL import Image

from ocr_service.engine.pipeline import Line, PageResult, WrongModelKindError

INFO_KEY = "fake-engine"
ENGINE = "tests.support.fake_engine:FakeEngine"
# Marks a page whose first row of pixels carries the instructions (see fake_png).
PIXEL_MAGIC = b"FAKE"


def fake_page(page: str, do: str = "ok", log: Path | None = None, gate: Path | None = None) -> Image.Image:
    image = Image.new("L", (32, 24), 255)
    image.info[INFO_KEY] = _instructions(page, do, log, gate)
    return image


def fake_png(page: str, do: str = "ok", log: Path | None = None) -> bytes:
    """A page as a PNG upload; the instructions travel in its first row of pixels (the service
    drops every page's metadata before a worker sees it, so a text chunk would not arrive)."""
    import io

    data = _instructions(page, do, log, None).encode()
    row = PIXEL_MAGIC + len(data).to_bytes(2, "big") + data
    image = Image.new("L", (320, 240), 255)
    assert len(row) <= image.width, "instructions too long for one row"
    image.putdata(list(row) + [255] * (image.width * image.height - len(row)))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _instructions(page: str, do: str, log: Path | None, gate: Path | None) -> str:
    return json.dumps({"page": page, "do": do, "log": str(log) if log else None, "gate": str(gate) if gate else None})


def instructions(image: Image.Image) -> dict[str, Any]:
    """What the engine will do with ``image``: its ``page`` name, ``do``, ``log`` and ``gate``."""
    raw = image.info.get(INFO_KEY)
    if raw is None and image.mode == "L":
        row = bytes(image.crop((0, 0, image.width, 1)).tobytes())
        if row.startswith(PIXEL_MAGIC):
            size = int.from_bytes(row[len(PIXEL_MAGIC) : len(PIXEL_MAGIC) + 2], "big")
            raw = row[len(PIXEL_MAGIC) + 2 : len(PIXEL_MAGIC) + 2 + size].decode()
    what: dict[str, Any] = json.loads(raw or '{"page": "", "do": "ok"}')
    return what


def tries(log: Path) -> list[dict[str, Any]]:
    """Every try of a page so far, in the order the workers began them."""
    path = log / "tries.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


class FakeEngine:
    def __init__(self, segmentation_model: Path | None, *, device: str = "cpu") -> None:
        if segmentation_model is not None and segmentation_model.name.startswith("refuse-"):
            if (segmentation_model.parent / "refuse").exists():
                raise RuntimeError("this worker was told not to start")
        self.segmentation_model_path = segmentation_model or Path("fake-blla.mlmodel")
        self.threads = 0

    def use_threads(self, threads: int) -> None:
        self.threads = threads

    def process(self, image: Image.Image, model: Any, segmentation_model: Any) -> PageResult:
        what = instructions(image)
        page, do = what["page"], what["do"]
        log = Path(what["log"]) if what.get("log") else None
        if log is not None:
            first_try = not any(t["page"] == page for t in tries(log))
            with open(log / "tries.jsonl", "a") as out:
                out.write(json.dumps({"page": page, "pid": os.getpid(), "threads": self.threads}) + "\n")
        else:
            first_try = True
        if do == "kill" or (do == "kill-once" and first_try):
            os.kill(os.getpid(), signal.SIGKILL)
        if do == "exit":
            os._exit(3)
        if do == "hang-unwatched":
            faulthandler.cancel_dump_traceback_later()
        if do in ("hang", "hang-unwatched"):
            time.sleep(3600)
        if do == "fail":
            raise ZeroDivisionError("the fake engine divided by zero")
        if do == "wrong-kind":
            raise WrongModelKindError("'fake' is not a recognition model")
        if what.get("gate"):
            gate = Path(what["gate"])
            while not gate.exists():
                time.sleep(0.01)
        line = Line(index=0, text=page, confidence=1.0, baseline=[[0, 10], [30, 10]], polygon=[], bbox=[0, 0, 30, 20])
        return PageResult(width=image.width, height=image.height, lines=[line])
