"""create_app(settings) → the OCR service's FastAPI app. Models load in the background at start.

create_management_app(services) → /health and /metrics on the management port (never published).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ocr_service.admission import Admission, PageMemory
from ocr_service.api import health, ocr
from ocr_service.api import models as models_api
from ocr_service.api import training as training_api
from ocr_service.api.deps import Services
from ocr_service.documents import PageLimits
from ocr_service.errors import install_error_handlers
from ocr_service.fetch import DocumentFetcher, FetchPolicy
from ocr_service.metrics import Gauges, RequestLatency, ServiceMetrics
from ocr_service.middleware import BodyLimitMiddleware, RequestIdMiddleware
from ocr_service.model_inspection import ModelChecker
from ocr_service.models_admin import ModelAdmin
from ocr_service.ocr import OcrService
from ocr_service.pool import WorkerPool
from ocr_service.scratch import sweep
from ocr_service.settings import Settings
from ocr_service.store import ModelStore
from ocr_service.training.service import TrainingService
from ocr_service.workers.messages import KRAKEN_ENGINE

log = logging.getLogger(__name__)

_OCR_ROUTES = frozenset({"/ocr", "/ocr/stream"})

# Multipart framing around an upload is small; this slack keeps a file of exactly the
# document limit from being refused by the body cap.
_MULTIPART_SLACK = 64 * 1024


def build_services(settings: Settings, engine: str = KRAKEN_ENGINE) -> Services:
    """``engine``: what each OCR worker runs ("module:callable"); tests name a fake one."""
    metrics = ServiceMetrics()
    store = ModelStore(settings.models_dir, settings.default_model, segmentation_model=settings.segmentation_model)
    # One child process loading a model at a time: uploads, hand-placed files and trained models.
    checker = ModelChecker.from_settings(settings)
    workers = settings.worker_count
    pool = WorkerPool(
        workers=workers,
        threads_per_worker=settings.worker_threads,
        segmentation_file=store.configured_segmentation_file,
        log_level=settings.log_level,
        log_json=settings.log_json,
        page_timeout_s=settings.page_timeout_s,
        engine=engine,
        device=settings.device,
        metrics=metrics,
    )
    fetcher = DocumentFetcher(
        FetchPolicy(
            allowed_hosts=frozenset(settings.allowed_pdf_hosts),
            allow_private_addresses=settings.allow_private_addresses,
            max_bytes=settings.max_document_bytes,
            timeout_s=settings.fetch_timeout_s,
            max_redirects=settings.fetch_max_redirects,
        )
    )
    service = OcrService(
        limits=PageLimits(
            max_pages=settings.max_pages,
            max_page_pixels=settings.max_page_pixels,
            pdf_dpi=settings.pdf_dpi,
            max_aspect_ratio=settings.max_page_aspect_ratio,
            max_segmentation_width=settings.max_segmentation_width,
            open_timeout_s=settings.document_open_timeout_s,
            render_timeout_s=settings.pdf_render_timeout_s,
            render_address_space=settings.pdf_render_address_space,
        ),
        store=store,
        pool=pool,
        fetcher=fetcher,
        admission=Admission(workers + settings.queue_size, settings.retry_after_s),
        memory=PageMemory(settings.page_memory_bytes),
        metrics=metrics,
    )
    services = Services(settings=settings, store=store, pool=pool, ocr=service, model_checker=checker, metrics=metrics)
    training = services.training = TrainingService(settings, store, validate=checker.facts)
    services.models_in_use = training.models_in_use
    metrics.watch(
        Gauges(
            documents_in_flight=lambda: service.admission.active,
            documents_limit=service.admission.limit,
            pages_waiting_for_memory=lambda: service.memory.waiting,
            pages_waiting_for_worker=lambda: pool.pages_queued,
            workers_alive=lambda: len(pool.info),
            workers_configured=workers,
            training_jobs=lambda: [job.status for job in training.all_jobs()],
        )
    )
    return services


def create_app(settings: Settings | None = None, *, engine: str = KRAKEN_ENGINE) -> FastAPI:
    settings = settings or Settings()
    settings.check_memory_budget()
    services = build_services(settings, engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What a killed service left in TMPDIR (its scratch folders only, never others' files).
        await asyncio.to_thread(sweep)

        async def load() -> None:
            try:
                await asyncio.to_thread(services.pool.start)
            except Exception as exc:
                services.startup_error = f"The OCR workers failed to start: {exc}"
                log.exception("the OCR workers failed to start")

        loader = asyncio.create_task(load())
        if services.training is not None:
            # Jobs a previous process left QUEUED/RUNNING are reported FAILED ("interrupted").
            await asyncio.to_thread(services.training.start)
        try:
            yield
        finally:
            if services.training is not None:
                await asyncio.to_thread(services.training.shutdown)
            if not loader.done():
                await loader
            await asyncio.to_thread(services.pool.shutdown)
            services.ocr.close()
            await asyncio.to_thread(model_admin.inspector.close)

    app = FastAPI(title="Familienarchiv OCR service", version="0.1.0", lifespan=lifespan)
    app.state.services = services
    # models_in_use is read through services on every call: the training side sets it later.
    model_admin = ModelAdmin.from_settings(
        settings, services.store, lambda: services.models_in_use(), checker=services.model_checker
    )
    app.state.model_admin = model_admin
    # GET /models is unauthenticated: a file placed by hand is inspected in the background, once.
    services.store.watch_unchecked(model_admin.inspector.notice)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(ocr.router)
    app.include_router(models_api.router)
    app.include_router(training_api.router)

    def body_limit(path: str) -> int | None:
        # The OCR routes bound their own bodies, after admission (ocr_service/api/ocr_input.py).
        if path in _OCR_ROUTES:
            return None
        # Model uploads have their own bound (OCR_MAX_MODEL_BYTES); the other bodies carry documents.
        if path == "/models":
            return settings.max_model_bytes + _MULTIPART_SLACK
        if path in ("/train", "/segtrain"):
            return settings.training_max_upload_bytes + _MULTIPART_SLACK
        return settings.max_document_bytes + _MULTIPART_SLACK

    app.add_middleware(BodyLimitMiddleware, limit_for=body_limit)
    app.add_middleware(RequestIdMiddleware)
    # Outermost: a request refused by the body limit is timed and counted too.
    app.add_middleware(RequestLatency, metrics=services.metrics)
    return app


def create_management_app(services: Services) -> FastAPI:
    """Health and metrics for operators, on a port of its own that is never published."""
    app = FastAPI(title="Familienarchiv OCR service management", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.services = services
    install_error_handlers(app)
    app.include_router(health.router)

    @app.get("/metrics")
    async def metrics() -> Response:
        # In a thread: the training gauge reads the jobs' state files.
        body = await asyncio.to_thread(generate_latest, services.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app
