"""What the service and a worker process send each other over the worker's own pipe, and the
outcomes of a page that are not kraken's: all plain picklable values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

# The engine a worker builds at start: "module:callable", called with the segmentation model
# file (or None for the packaged one) and ``device=`` OCR_DEVICE. Tests name a small fake engine here.
KRAKEN_ENGINE = "ocr_service.engine.pipeline:PageEngine"


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a new worker process needs to load its models and log like the service."""

    engine: str
    segmentation_model: str | None
    threads: int
    log_level: str
    log_json: bool
    # OCR_DEVICE ("cpu", "cuda:N"): where the engine runs kraken.
    device: str = "cpu"


@dataclass(frozen=True)
class WorkerInfo:
    pid: int
    segmentation_model: str
    threads: int


@dataclass(frozen=True)
class PageTimeLimit:
    """How long one page may take, and the file its worker writes its stacks into if it hangs."""

    seconds: float
    report: str


@dataclass(frozen=True)
class PageTask:
    task_id: int
    image: Image.Image
    # ModelRef values (or None), passed through untouched: the engine knows what they mean.
    model: Any
    segmentation_model: Any
    threads: int
    limit: PageTimeLimit | None


@dataclass(frozen=True)
class Ready:
    info: WorkerInfo


@dataclass(frozen=True)
class StartFailed:
    reason: str


@dataclass(frozen=True)
class PageDone:
    task_id: int
    # exactly one of the two: the engine's result, or the exception the page raised
    result: Any = None
    error: BaseException | None = None


class PageFailedError(Exception):
    """kraken failed on a page in a way we did not foresee; the worker logged the traceback."""


class PageTimedOutError(Exception):
    """The page ran past its time limit; its worker's watchdog ended the worker."""

    def __init__(self, seconds: float, stacks: str) -> None:
        super().__init__(f"the page took longer than {seconds:g} s")
        self.seconds = seconds
        self.stacks = stacks


class PageKilledWorkerError(Exception):
    """The worker died under this page on every attempt (out of memory, a crash in C code)."""

    def __init__(self, attempts: int, exitcode: int | None) -> None:
        super().__init__(f"the page ended its worker {attempts} times (last exit code {exitcode})")
        self.attempts = attempts
        self.exitcode = exitcode


class PoolClosedError(Exception):
    """The pool was shut down, or none of its workers can start, before the page was read."""
