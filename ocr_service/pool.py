"""The bounded pool of kraken worker processes (admission in front of it: ocr_service.admission).

Processes, not threads: most of a page's time is blla's single-threaded Python/scipy
post-processing, which holds the GIL. Each worker loads its own copy of the models once and
reads one page at a time (``ocr_service.workers``). A worker's own share of the cores is
``threads_per_worker`` so that busy workers never oversubscribe them (kraken #528); a page
that starts while other workers are idle may use their share too, so one page alone is as
fast as kraken's own loop. Pages of one document and of several documents overlap in the pool.

A worker that dies costs only the page it was reading: that page is tried once more on another
worker, and a page that ends two workers is the document's fault (422 PAGE_KILLED_WORKER).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from ocr_service.engine.pipeline import (
    ModelLoadError,
    ModelRef,
    PageResult,
    SegmentationModelError,
    WrongModelKindError,
)
from ocr_service.errors import AppError, ErrorCode
from ocr_service.metrics import PAGE_ABANDONED, ServiceMetrics
from ocr_service.workers.handle import PageJob
from ocr_service.workers.messages import (
    KRAKEN_ENGINE,
    PageFailedError,
    PageKilledWorkerError,
    PageTimedOutError,
    PoolClosedError,
    WorkerInfo,
    WorkerSpec,
)
from ocr_service.workers.supervisor import Supervisor

log = logging.getLogger(__name__)

__all__ = ["WorkerInfo", "WorkerPool"]

# How long past its limit a page may run when its worker's own watchdog did not end it.
KILL_GRACE_S = 5.0


class WorkerPool:
    """Worker processes that load the models once each; one dead worker fails at most one page."""

    def __init__(
        self,
        workers: int,
        threads_per_worker: int,
        segmentation_file: Callable[[], Path | None],
        log_level: str = "INFO",
        log_json: bool = False,
        page_timeout_s: float = 0.0,
        *,
        cores: int | None = None,
        engine: str = KRAKEN_ENGINE,
        kill_grace_s: float = KILL_GRACE_S,
        device: str = "cpu",
        metrics: ServiceMetrics | None = None,
    ) -> None:
        """``segmentation_file`` gives the segmentation model each new worker loads at start
        (``OCR_SEGMENTATION_MODEL``'s current file, or None for the packaged one). ``cores``:
        the threads all workers may use together (default: each worker's share, summed).
        ``engine``: "module:callable" building a worker's engine (tests name a fake one);
        ``device``: where it runs kraken (OCR_DEVICE). ``metrics`` counts each page's outcome
        here, in the service process, where the workers' results arrive."""
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.segmentation_file = segmentation_file
        self.cores = cores or workers * threads_per_worker
        self._page_timeout_s = page_timeout_s
        self._engine = engine
        self._device = device
        self._metrics = metrics
        self._log = (log_level, log_json)
        self._supervisor = Supervisor(
            workers,
            threads_per_worker,
            self.cores,
            self._spec,
            page_timeout_s=page_timeout_s,
            kill_grace_s=kill_grace_s,
        )
        self._started = False

    @property
    def page_timeout_s(self) -> float:
        return self._page_timeout_s

    @property
    def ready(self) -> bool:
        return self._started and self._supervisor.serving

    @property
    def info(self) -> list[WorkerInfo]:
        """The workers that have loaded their models, replacements included."""
        return self._supervisor.info

    def _spec(self) -> WorkerSpec:
        segmentation = self.segmentation_file()
        return WorkerSpec(
            engine=self._engine,
            segmentation_model=str(segmentation) if segmentation else None,
            threads=self.threads_per_worker,
            log_level=self._log[0],
            log_json=self._log[1],
            device=self._device,
        )

    def start(self) -> list[WorkerInfo]:
        """Start every worker and wait until each has loaded its models (blocking)."""
        info = self._supervisor.start()
        self._started = True
        log.info(
            "OCR pool ready: %d worker(s) of %d thread(s), %d in all; segmentation model %s",
            self.workers,
            self.threads_per_worker,
            self.cores,
            info[0].segmentation_model,
        )
        return info

    async def process_page(
        self,
        image: Image.Image,
        model: ModelRef | None,
        segmentation_model: ModelRef | None = None,
        *,
        let_go: Callable[[], None] | None = None,
    ) -> PageResult:
        """Read one page; ``segmentation_model`` None means the one the workers loaded at start.

        Cancelling the caller abandons the page: if no worker has taken it yet it never starts,
        if one has, its result is dropped. ``let_go`` is called once, on this event loop, when
        neither this call nor the workers hold the image any more — for an abandoned page that
        may be long after the caller was cancelled (its worker reads it to the end), which is
        what a page's memory reservation must wait for."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[PageResult] = loop.create_future()
        holders = _Holders(let_go)

        def deliver(result: Any, error: BaseException | None) -> None:
            # The loop is gone only when the service stopped and nobody waits for the page.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, outcome, result, error)

        def workers_let_go() -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(holders.drop)

        job = PageJob(image, model, segmentation_model, deliver, workers_let_go)
        try:
            try:
                self._supervisor.submit(job)
            except PoolClosedError as exc:
                holders.drop()  # the workers never had it
                raise AppError(ErrorCode.MODELS_NOT_READY, "The OCR workers are not running.") from exc
            try:
                result = await outcome
            except asyncio.CancelledError:
                self._supervisor.abandon(job)
                self._count_failure(PAGE_ABANDONED)
                raise
            except (PageTimedOutError, PageKilledWorkerError, PoolClosedError) as exc:
                error = _pool_error(exc)
                self._count_failure(error.code.value)
                raise error from exc
            except (WrongModelKindError, ModelLoadError, SegmentationModelError, PageFailedError) as exc:
                error = _engine_error(exc)
                self._count_failure(
                    error.code.value, model_failed=isinstance(exc, ModelLoadError | SegmentationModelError)
                )
                raise error from exc
            if self._metrics is not None:
                self._metrics.page_read(result)
            return result
        finally:
            holders.drop()

    def _count_failure(self, outcome: str, *, model_failed: bool = False) -> None:
        if self._metrics is not None:
            self._metrics.page_failed(outcome, model_failed=model_failed)

    @property
    def pages_queued(self) -> int:
        """Pages waiting for a free worker (read by the metrics, from another thread)."""
        return self._supervisor.pages_queued

    def shutdown(self) -> None:
        """Stop every worker process (a page on one fails with MODELS_NOT_READY) and wait for them."""
        self._started = False
        self._supervisor.close()


class _Holders:
    """A page's two holders, this call and the workers; ``let_go`` when both have dropped it."""

    def __init__(self, let_go: Callable[[], None] | None) -> None:
        self._left = 2
        self._let_go = let_go

    def drop(self) -> None:
        self._left -= 1
        if self._left == 0 and self._let_go is not None:
            self._let_go()


def _settle(outcome: asyncio.Future[PageResult], result: Any, error: BaseException | None) -> None:
    if outcome.done():
        return  # cancelled meanwhile
    if error is not None:
        outcome.set_exception(error)
    else:
        outcome.set_result(result)


def _pool_error(exc: PageTimedOutError | PageKilledWorkerError | PoolClosedError) -> AppError:
    if isinstance(exc, PageTimedOutError):
        return AppError(
            ErrorCode.PAGE_TIMEOUT,
            f"Reading this page took longer than the limit of {exc.seconds:g} s (OCR_PAGE_TIMEOUT_S); "
            "its OCR worker was stopped and replaced. Retrying will not help: the page may be damaged "
            "or unusually complex.",
        )
    if isinstance(exc, PageKilledWorkerError):
        return AppError(
            ErrorCode.PAGE_KILLED_WORKER,
            f"Reading this page ended the OCR worker {exc.attempts} times (out of memory, or a crash "
            "inside kraken); it was not read. Retrying will not help: the page may be damaged or too "
            "large to segment.",
        )
    return AppError(ErrorCode.MODELS_NOT_READY, f"This page was not read: {exc}.", headers={"Retry-After": "10"})


def _engine_error(exc: Exception) -> AppError:
    if isinstance(exc, WrongModelKindError):
        return AppError(ErrorCode.WRONG_MODEL_KIND, f"{exc}; choose a recognition model.")
    if isinstance(exc, ModelLoadError):
        return AppError(ErrorCode.UNKNOWN_MODEL, str(exc))
    if isinstance(exc, SegmentationModelError):
        return AppError(
            ErrorCode.SEGMENTATION_MODEL_UNUSABLE,
            f"OCR cannot run: {exc}. An admin must choose another segmentation model "
            "(PUT /models/segmentation) or repair the file of OCR_SEGMENTATION_MODEL.",
        )
    return AppError(ErrorCode.OCR_FAILED, f"OCR failed on this page: {exc}")
