"""The bounded pool of kraken worker processes, and admission control in front of it.

Processes, not threads: most of a page's time is blla's single-threaded Python/scipy
post-processing, which holds the GIL. Each worker loads its own copy of the models and
runs torch with ``cores // workers`` threads so workers never oversubscribe the cores
(kraken #528). Pages of one document and of several documents overlap in the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ocr_service.engine.pipeline import (
    ModelLoadError,
    ModelRef,
    PageEngine,
    PageResult,
    SegmentationModelError,
    WrongModelKindError,
)
from ocr_service.errors import AppError, ErrorCode
from ocr_service.logs import configure_logging

log = logging.getLogger(__name__)

_engine: PageEngine | None = None


class PageFailedError(Exception):
    """kraken failed on a page in a way we did not foresee; the worker logged the traceback."""


@dataclass(frozen=True)
class WorkerInfo:
    pid: int
    segmentation_model: str
    threads: int


def _init_worker(segmentation_model: str | None, threads: int, log_level: str, log_json: bool) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    configure_logging(log_level, log_json)
    torch.set_num_threads(threads)
    threadpool_limits(threads)
    global _engine
    _engine = PageEngine(Path(segmentation_model) if segmentation_model else None)
    log.info("OCR worker %d ready (%d thread(s))", os.getpid(), threads)


def _describe_worker(linger_s: float) -> WorkerInfo:
    assert _engine is not None
    import time

    import torch

    # Lingering a moment lets the other idle workers take the other describe calls.
    time.sleep(linger_s)

    return WorkerInfo(os.getpid(), str(_engine.segmentation_model_path), torch.get_num_threads())


@dataclass(frozen=True)
class PageTimeLimit:
    """How long one page may take, and the file its worker writes its stacks into if it hangs."""

    seconds: float
    report: str


def _process_page(
    image: Image.Image,
    model: ModelRef | None,
    segmentation_model: ModelRef | None,
    limit: PageTimeLimit | None,
) -> PageResult:
    assert _engine is not None
    with contextlib.ExitStack() as on_exit:
        if limit is not None:
            # A page stuck inside kraken or torch ends this worker: faulthandler's watchdog is a
            # C thread that needs no GIL, so it fires even while C code holds it; it writes every
            # thread's stack into the page's report file and exits the process. The pool then
            # replaces the worker (ProcessPoolExecutor has no way to stop one task), and the
            # report tells the parent that it was this page, and where it hung.
            on_exit.callback(_remove, limit.report)
            report = on_exit.enter_context(open(limit.report, "w"))
            faulthandler.dump_traceback_later(limit.seconds, exit=True, file=report)
            on_exit.callback(faulthandler.cancel_dump_traceback_later)  # runs first: before the file closes
        try:
            return _engine.process(image, model, segmentation_model)
        except (WrongModelKindError, ModelLoadError, SegmentationModelError):
            raise
        except Exception as exc:
            log.exception("kraken failed on a page")
            raise PageFailedError(f"{type(exc).__name__}: {exc}") from None


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _take_report(path: str) -> str:
    """What a page's watchdog wrote (empty if it never fired); the file is removed."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""
    finally:
        _remove(path)


class WorkerPool:
    """A process pool that loads the models once per worker and survives a dead worker."""

    def __init__(
        self,
        workers: int,
        threads_per_worker: int,
        segmentation_file: Callable[[], Path | None],
        log_level: str = "INFO",
        log_json: bool = False,
        page_timeout_s: float = 0.0,
    ) -> None:
        """``segmentation_file`` gives the segmentation model each new worker loads at start
        (``OCR_SEGMENTATION_MODEL``'s current file, or None for the packaged one)."""
        self.workers = workers
        self.page_timeout_s = page_timeout_s
        self.threads_per_worker = threads_per_worker
        self.segmentation_file = segmentation_file
        self._reports = tempfile.mkdtemp(prefix="ocr-page-reports-")
        self._log = (log_level, log_json)
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self.ready = False
        self._closing = False
        self.info: list[WorkerInfo] = []

    def _new_executor(self) -> ProcessPoolExecutor:
        # spawn, never fork: forking a process that has started threads (uvicorn, torch) deadlocks.
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(
                str(seg) if (seg := self.segmentation_file()) else None,
                self.threads_per_worker,
                *self._log,
            ),
        )

    def start(self) -> list[WorkerInfo]:
        """Start every worker and wait until each has loaded its models (blocking)."""
        with self._lock:
            self._executor = self._new_executor()
            executor = self._executor
        # Submitting as many describe calls as workers makes the executor start all of them;
        # ready means every worker has answered once, i.e. has loaded its models.
        seen: dict[int, WorkerInfo] = {}
        for _ in range(20):
            futures = [executor.submit(_describe_worker, 0.3) for _ in range(self.workers - len(seen))]
            for future in futures:
                info = future.result()
                seen[info.pid] = info
            if len(seen) >= self.workers:
                break
        self.info = list(seen.values())
        self.ready = True
        log.info("OCR pool ready: %d worker(s), segmentation model %s", self.workers, self.info[0].segmentation_model)
        return self.info

    def _submit(
        self, image: Image.Image, model: ModelRef | None, segmentation_model: ModelRef | None
    ) -> tuple[ProcessPoolExecutor, Future[PageResult], PageTimeLimit | None]:
        with self._lock:
            if self._executor is None:
                raise AppError(ErrorCode.MODELS_NOT_READY, "The OCR workers are not running.")
            limit = None
            if self.page_timeout_s > 0:
                limit = PageTimeLimit(self.page_timeout_s, os.path.join(self._reports, f"{uuid.uuid4().hex}.stacks"))
            args = (image, model, segmentation_model, limit)
            try:
                return self._executor, self._executor.submit(_process_page, *args), limit
            except BrokenProcessPool:
                self._restart_locked(self._executor)
                assert self._executor is not None
                return self._executor, self._executor.submit(_process_page, *args), limit

    def _restart_locked(self, broken: ProcessPoolExecutor) -> None:
        # Every page that was in a broken pool fails at once; only the first of them may
        # replace it, or the later ones would shut down the fresh pool and its new pages.
        if self._closing or broken is not self._executor:
            return
        log.error("an OCR worker died; restarting the worker pool")
        broken.shutdown(wait=False, cancel_futures=True)
        self._executor = self._new_executor()

    async def process_page(
        self, image: Image.Image, model: ModelRef | None, segmentation_model: ModelRef | None = None
    ) -> PageResult:
        """Read one page; ``segmentation_model`` None means the one the workers loaded at start."""
        executor, future, limit = self._submit(image, model, segmentation_model)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BrokenProcessPool as exc:
            if self._closing:
                raise AppError(ErrorCode.MODELS_NOT_READY, "The OCR service is shutting down.") from exc
            with self._lock:
                self._restart_locked(executor)
            # The pool does not say why a worker died; this page's own watchdog report does.
            stacks = _take_report(limit.report) if limit is not None else ""
            if limit is not None and stacks.startswith("Timeout"):
                log.error(
                    "a page took longer than %g s; its worker was ended. Where it hung:\n%s", limit.seconds, stacks
                )
                raise AppError(
                    ErrorCode.PAGE_TIMEOUT,
                    f"Reading this page took longer than the limit of {limit.seconds:g} s (OCR_PAGE_TIMEOUT_S); "
                    "its OCR worker was stopped and replaced. Retrying will not help: the page may be damaged "
                    "or unusually complex.",
                ) from exc
            raise AppError(
                ErrorCode.OCR_FAILED,
                "An OCR worker stopped while this page was in the pool (out of memory, or another page hung "
                "and its worker was ended); please try again.",
            ) from exc
        except WrongModelKindError as exc:
            raise AppError(ErrorCode.WRONG_MODEL_KIND, f"{exc}; choose a recognition model.") from exc
        except ModelLoadError as exc:
            raise AppError(ErrorCode.UNKNOWN_MODEL, str(exc)) from exc
        except SegmentationModelError as exc:
            raise AppError(
                ErrorCode.SEGMENTATION_MODEL_UNUSABLE,
                f"OCR cannot run: {exc}. An admin must choose another segmentation model "
                "(PUT /models/segmentation) or repair the file of OCR_SEGMENTATION_MODEL.",
            ) from exc
        except PageFailedError as exc:
            raise AppError(ErrorCode.OCR_FAILED, f"OCR failed on this page: {exc}") from exc

    def shutdown(self) -> None:
        self.ready = False
        self._closing = True
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)
                self._executor = None
        shutil.rmtree(self._reports, ignore_errors=True)
