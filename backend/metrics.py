"""Prometheus metrics of one backend app, served on the management port only."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import InstrumentedAttribute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.db import Database
from backend.ocr.models import JobStatus, OcrJob
from backend.training.models import RunStatus, TrainingRun

log = logging.getLogger(__name__)

# An OCR job reads a document of 1 to hundreds of pages at 10-30 s a page.
_JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)


class Metrics:
    """A registry of its own per app, so two apps in one process (tests) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_latency = Histogram(
            "http_server_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            registry=self.registry,
        )
        # Counted by the process whose runner stored the page; Prometheus sums the processes.
        self.ocr_pages = Counter(
            "ocr_pages_read", "Pages whose OCR lines were stored by this process's job runner", registry=self.registry
        )
        self.ocr_job_seconds = Histogram(
            "ocr_job_duration_seconds",
            "Duration of an OCR job's last run (claimed by a runner until it ended), by how it ended",
            ["status"],
            registry=self.registry,
            buckets=_JOB_BUCKETS,
        )

    def watch_jobs(self, db: Database) -> None:
        """Serve ``ocr_jobs{status}`` and ``training_runs{status}``: the queue and the training runs
        as the database holds them, counted at each scrape.

        Counted on the database's side engine, never the app's pool: a scrape must answer while
        every pooled connection is busy (that is when an operator looks), and gives up within
        its short time limits, leaving the gauge out, rather than hang.
        """
        self.registry.register(
            _CountByStatus(db.side_engine, "ocr_jobs", "OCR jobs in the database by status", OcrJob.status, JobStatus)
        )
        self.registry.register(
            _CountByStatus(
                db.side_engine,
                "training_runs",
                "Training runs in the database by status",
                TrainingRun.status,
                RunStatus,
            )
        )

    def job_ended(self, status: JobStatus, seconds: float) -> None:
        self.ocr_job_seconds.labels(status.value).observe(max(seconds, 0.0))


class _CountByStatus(Collector):
    """Rows by status, read from the database at scrape time, so it is true across every backend
    process and restart. Every status is served, 0 where there is none, so a panel has no gaps."""

    def __init__(
        self,
        engine: Engine,
        name: str,
        documentation: str,
        column: InstrumentedAttribute[Any],
        statuses: type[StrEnum],
    ) -> None:
        self._engine = engine
        self._name, self._documentation = name, documentation
        self._column, self._statuses = column, statuses

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self._name, self._documentation, labels=["status"])

    def describe(self) -> list[Metric]:
        # Described without a query: registering must not touch the database.
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        try:
            with self._engine.connect() as connection:
                rows = connection.execute(select(self._column, func.count()).group_by(self._column)).all()
        except SQLAlchemyError:
            # Left out of this scrape rather than failing it: the breaker's state and the rest
            # matter most exactly when the database is in trouble (/health says so).
            log.warning("metrics: %s by status could not be counted", self._name, exc_info=True)
            return
        counts: dict[Any, int] = dict(rows)
        for status in self._statuses:
            family.add_metric([status.value], counts.get(status, 0))
        yield family


def _route_template(scope: Scope) -> str:
    # The template (/api/documents/{document_id}), never the raw path: ids would make one
    # time series per document. The router leaves the matched route in the scope.
    return str(getattr(scope.get("route"), "path", "unmatched"))


class RequestLatency:
    """Each HTTP request's latency by method, route template and status, as plain ASGI.

    Timed until the response starts (its status and headers), so an event stream or a large
    image counts the time to its first byte, not how long the client kept reading. Plain ASGI,
    not Starlette's ``BaseHTTPMiddleware``: that one runs the app in a task of its own and pipes
    every response through a memory stream, CPU on every request (bench/profile_api.py).
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                labels = (scope["method"], _route_template(scope), str(message["status"]))
                self.metrics.http_latency.labels(*labels).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, timed_send)
