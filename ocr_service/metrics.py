"""Prometheus metrics of the OCR service, served on its management port only.

Every name starts with ``ocr_service_``: Prometheus scrapes the backend too, and a dashboard
query that sums a name both serve (the backend counts the pages it stored) would count a page
twice. Everything is counted in the service process, where the workers' results arrive: the
workers are separate processes, and counting there would need prometheus_client's
multiprocess files, which a killed worker leaves behind.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ocr_service.engine.pipeline import PageResult
from ocr_service.errors import ErrorCode
from ocr_service.training.jobs import JobStatus

# A page takes 10-30 s on a CPU core, under a second on a GPU; the page time limit is 300 s.
_PAGE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600)
# Documents are answered after every page is read: a request may take as long as its pages.
_REQUEST_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

PAGE_READ = "read"
PAGE_ABANDONED = "abandoned"
STAGES = ("segmentation", "recognition", "page")
REFUSAL_REASONS = (ErrorCode.SERVICE_BUSY.value, ErrorCode.MODELS_NOT_READY.value)


@dataclass(frozen=True)
class Gauges:
    """Where the scrape-time gauges read their values (each a cheap read of an int or a list)."""

    documents_in_flight: Callable[[], int]
    documents_limit: int
    pages_waiting_for_memory: Callable[[], int]
    pages_waiting_for_worker: Callable[[], int]
    workers_alive: Callable[[], int]
    workers_configured: int
    training_jobs: Callable[[], list[JobStatus]] | None


class ServiceMetrics:
    """A registry of its own per app, so two services in one process (tests) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_latency = Histogram(
            "ocr_service_http_request_duration_seconds",
            "HTTP request latency by route template and status (its _count: requests)",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=_REQUEST_BUCKETS,
        )
        self.pages = Counter(
            "ocr_service_pages",
            "Pages that came back from the OCR workers, by outcome (read, abandoned, or the error code)",
            ["outcome"],
            registry=self.registry,
        )
        self.page_seconds = Histogram(
            "ocr_service_page_seconds",
            "Seconds a worker spent on a page that was read, by stage (segmentation, recognition, page)",
            ["stage"],
            registry=self.registry,
            buckets=_PAGE_BUCKETS,
        )
        self.refusals = Counter(
            "ocr_service_refusals",
            "OCR requests refused before their body was read, by reason (the error code)",
            ["reason"],
            registry=self.registry,
        )
        self.model_loads = Counter(
            "ocr_service_model_loads",
            "Models the OCR workers loaded for pages (cache misses), by outcome (loaded, failed)",
            ["outcome"],
            registry=self.registry,
        )
        for stage in STAGES:
            self.page_seconds.labels(stage)
        for outcome in ("loaded", "failed"):
            self.model_loads.labels(outcome)
        self.pages.labels(PAGE_READ)
        # Served at 0 from the start, so a panel of their rates shows 0 rather than no data.
        for reason in REFUSAL_REASONS:
            self.refusals.labels(reason)

    def watch(self, gauges: Gauges) -> None:
        self.registry.register(_StateCollector(gauges))

    def page_read(self, result: PageResult) -> None:
        self.pages.labels(PAGE_READ).inc()
        self.page_seconds.labels("segmentation").observe(result.segmentation_seconds)
        self.page_seconds.labels("recognition").observe(result.recognition_seconds)
        self.page_seconds.labels("page").observe(result.seconds)
        if result.models_loaded:
            self.model_loads.labels("loaded").inc(result.models_loaded)

    def page_failed(self, outcome: str, *, model_failed: bool = False) -> None:
        self.pages.labels(outcome).inc()
        if model_failed:
            self.model_loads.labels("failed").inc()

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()


class _StateCollector(Collector):
    """The service's state now, read at each scrape: no gauge can drift from what it counts."""

    def __init__(self, gauges: Gauges) -> None:
        self._gauges = gauges

    def describe(self) -> list[Metric]:
        return []  # collected at scrape time only; registering reads nothing

    def collect(self) -> Iterator[Metric]:
        g = self._gauges
        yield _gauge(
            "ocr_service_documents_in_flight", "Documents admitted and not yet answered", g.documents_in_flight()
        )
        yield _gauge(
            "ocr_service_documents_limit",
            "Documents admitted at once (workers + OCR_QUEUE_SIZE); one more is refused",
            g.documents_limit,
        )
        yield _gauge(
            "ocr_service_pages_waiting_for_memory",
            "Pages waiting for their share of the page memory (OCR_PAGE_MEMORY_MB)",
            g.pages_waiting_for_memory(),
        )
        yield _gauge(
            "ocr_service_pages_queued",
            "Decoded pages waiting for a free OCR worker",
            g.pages_waiting_for_worker(),
        )
        yield _gauge("ocr_service_workers_alive", "OCR workers with their models loaded", g.workers_alive())
        yield _gauge(
            "ocr_service_workers_configured", "OCR workers the service runs (OCR_WORKERS)", g.workers_configured
        )
        if g.training_jobs is not None:
            family = GaugeMetricFamily(
                "ocr_service_training_jobs", "Training jobs kept by the service, by status", labels=["status"]
            )
            counts = Tally(g.training_jobs())
            for status in JobStatus:
                family.add_metric([status.value], counts.get(status, 0))
            yield family


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _route_template(scope: Scope) -> str:
    # The template (/train/{job_id}), never the raw path: ids would make one series per job.
    return str(getattr(scope.get("route"), "path", "unmatched"))


class RequestLatency:
    """Each HTTP request's latency by method, route template and status, as plain ASGI.

    Timed until the response starts: a streamed OCR answer counts the time to its first page
    (/ocr/stream sends its head after the checks), /ocr the time to the whole document.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
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
