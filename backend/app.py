"""create_app(settings) → the backend's public API; create_management_app → /health and /metrics."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from backend.api_headers import ApiHeaders
from backend.db import migrate, startup_lock
from backend.deps import Services, build_services, render_limits
from backend.documents import routes as documents_routes
from backend.errors import AppError, ErrorCode, error_response, install_error_handlers
from backend.exports import routes as exports_routes
from backend.imports import routes as imports_routes
from backend.metrics import RequestLatency
from backend.ocr import routes as ocr_routes
from backend.ocr.queue import JobQueue
from backend.ocr.runner import JobRunner
from backend.search import routes as search_routes
from backend.settings import Settings
from backend.training import routes as training_routes
from backend.training.follower import RunFollower
from backend.training.leases import RunLeases
from backend.users import routes as users_routes
from backend.users.bootstrap import bootstrap_first_admin
from backend.web import routes as web_routes
from backend.web.deps import LoginRequired
from backend.web.rendering import Renderer
from backend.writers import routes as writers_routes

log = logging.getLogger(__name__)


def _migrate_and_bootstrap(services: Services) -> None:
    # Under the start-up lock: backends starting at once on one database migrate it once, in
    # turn, and the first finds no admin and makes it while the others wait.
    with startup_lock(services.db.engine):
        migrate(services.db.engine)
        bootstrap_first_admin(services)


def _purge_trash(services: Services) -> None:
    with services.db.sessions() as session:
        services.documents.purge_expired(session, services.clock())


def make_runner(services: Services, *, owner: str | None = None) -> JobRunner | None:
    """This process's OCR job runner; None where APP_OCR_JOBS_CONCURRENCY is 0 (it runs no jobs)."""
    settings = services.settings
    if settings.ocr_jobs_concurrency == 0:
        return None
    owner = owner or _owner()
    queue = JobQueue(
        services.db, services.lines, owner, timedelta(seconds=settings.ocr_lease_s), metrics=services.metrics
    )
    return JobRunner(
        queue,
        services.ocr,
        services.documents.storage,
        concurrency=settings.ocr_jobs_concurrency,
        poll_s=settings.ocr_poll_s,
        max_attempts=settings.ocr_max_attempts,
        clock=services.clock,
    )


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def make_follower(services: Services, *, owner: str | None = None) -> RunFollower:
    """This process's follower of training runs (every process has one; the lease picks who follows)."""
    settings = services.settings
    return RunFollower(
        RunLeases(services.db, owner or _owner(), timedelta(seconds=settings.training_lease_s)),
        services.ocr,
        services.documents.storage,
        render_limits(settings),
        services.training.data,
        services.training.judge,
        poll_s=settings.training_poll_s,
        lost_after_s=settings.training_lost_after_s,
        epochs=settings.training_epochs,
        clock=services.clock,
    )


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> FastAPI:
    """The public app. Migrations run when it starts; the database is closed when it stops."""
    settings = settings or Settings()
    services = services or build_services(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(_migrate_and_bootstrap, services)
        await run_in_threadpool(_purge_trash, services)
        await run_in_threadpool(services.searches.start)
        runner = make_runner(services)
        loop = asyncio.create_task(runner.run(), name="ocr-runner") if runner else None
        following = asyncio.create_task(make_follower(services).run(), name="training-follower")
        try:
            yield
        finally:
            # Cancelled, the follower hands its run back: the next backend re-attaches at once.
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
            if loop is not None and runner is not None:
                loop.cancel()
                await asyncio.gather(loop, return_exceptions=True)
                await runner.stop()
            await services.ocr.aclose()
            await run_in_threadpool(services.searches.close)
            services.pages.close()
            services.db.dispose()

    app = FastAPI(title="Familienarchiv backend", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.services = services
    app.state.renderer = Renderer(services.settings.frontend_dir)
    install_error_handlers(app, page_errors=web_routes.page_errors)
    app.add_exception_handler(LoginRequired, web_routes.login_required)
    app.add_middleware(RequestLatency, metrics=services.metrics)
    app.add_middleware(ApiHeaders)
    app.include_router(users_routes.router)
    app.include_router(documents_routes.router)
    app.include_router(imports_routes.router)
    app.include_router(ocr_routes.router)
    app.include_router(writers_routes.router)
    app.include_router(search_routes.router)
    app.include_router(training_routes.router)
    app.include_router(exports_routes.router)
    app.include_router(web_routes.router)
    app.mount("/static", web_routes.static_files(services.settings.frontend_dir), name="static")
    return app


def create_management_app(services: Services) -> FastAPI:
    """Health and metrics for operators, on a port of its own that is never published."""
    app = FastAPI(title="Familienarchiv backend management", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)

    @app.get("/health")
    async def health() -> Response:
        try:
            await run_in_threadpool(services.db.ping)
        except SQLAlchemyError:
            log.warning("health check: the database does not answer", exc_info=True)
            return error_response(AppError(ErrorCode.DATABASE_UNAVAILABLE, "The database does not answer."))
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def metrics() -> Response:
        # In a thread: the jobs-by-status gauge asks the database at each scrape.
        body = await run_in_threadpool(generate_latest, services.metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app
