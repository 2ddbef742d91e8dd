"""Inside one worker process: build the engine once, then read one page at a time from the pipe.

A worker owns nothing but its pipe: when the service closes it (or the service itself dies)
``recv`` ends and so does the worker, so no worker outlives the service.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import logging
import os
import signal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from ocr_service.engine.pipeline import ModelLoadError, SegmentationModelError, WrongModelKindError
from ocr_service.logs import configure_logging
from ocr_service.workers.messages import (
    PageDone,
    PageFailedError,
    PageTask,
    Ready,
    StartFailed,
    WorkerInfo,
    WorkerSpec,
)

log = logging.getLogger(__name__)

# The engine's own refusals travel back as they are; the service maps each to its 4xx/503.
ENGINE_ERRORS = (WrongModelKindError, ModelLoadError, SegmentationModelError)


class Engine(Protocol):
    segmentation_model_path: Path | str

    def use_threads(self, threads: int) -> None: ...

    def process(self, image: Any, model: Any, segmentation_model: Any) -> Any: ...


def load_engine(spec: WorkerSpec) -> Engine:
    module_name, _, attribute = spec.engine.partition(":")
    factory = getattr(importlib.import_module(module_name), attribute)
    engine: Engine = factory(Path(spec.segmentation_model) if spec.segmentation_model else None, device=spec.device)
    return engine


def serve(conn: Connection, spec: WorkerSpec) -> None:
    """The worker process's main function (the target of ``multiprocessing.Process``)."""
    # Ctrl-C in a terminal reaches the whole process group; the service stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(spec.log_level, spec.log_json)
    try:
        engine = load_engine(spec)
        engine.use_threads(spec.threads)
    except Exception as exc:  # a trust boundary: whatever stops the models loading is reported, with its traceback
        log.exception("OCR worker %d could not load its models", os.getpid())
        conn.send(StartFailed(f"{type(exc).__name__}: {exc}"))
        return
    conn.send(Ready(WorkerInfo(os.getpid(), str(engine.segmentation_model_path), spec.threads)))
    log.info("OCR worker %d ready (%d thread(s) of its own)", os.getpid(), spec.threads)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return  # the service closed the pipe (shutdown) or is gone
        try:
            conn.send(run_page(engine, task))
        except (BrokenPipeError, ConnectionResetError):
            return


def run_page(engine: Engine, task: PageTask) -> PageDone:
    with contextlib.ExitStack() as on_exit:
        limit = task.limit
        if limit is not None:
            on_exit.callback(_remove, limit.report)  # runs last: a page that ends in time leaves no file
            # A page stuck inside kraken or torch ends this worker: faulthandler's watchdog is a
            # C thread that needs no GIL, so it fires even while C code holds it; it writes every
            # thread's stack into the page's report file and exits the process. The report tells
            # the service that this page hung (a timeout), not that the worker crashed.
            report = on_exit.enter_context(open(limit.report, "w"))
            faulthandler.dump_traceback_later(limit.seconds, exit=True, file=report)
            on_exit.callback(faulthandler.cancel_dump_traceback_later)  # runs first: before the file closes
        try:
            # The service lends this page the cores of idle workers; set per page because the
            # number changes with how many pages run beside it.
            engine.use_threads(task.threads)
            return PageDone(task.task_id, result=engine.process(task.image, task.model, task.segmentation_model))
        except ENGINE_ERRORS as exc:
            return PageDone(task.task_id, error=exc)
        except Exception as exc:  # a trust boundary: kraken's unforeseen failures, logged with the traceback
            log.exception("kraken failed on a page")
            return PageDone(task.task_id, error=PageFailedError(f"{type(exc).__name__}: {exc}"))


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
