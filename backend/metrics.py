"""Prometheus metrics of one backend app, served on the management port only."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Histogram
from starlette.requests import Request
from starlette.responses import Response


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


def _route_template(request: Request) -> str:
    # The template (/api/documents/{document_id}), never the raw path: ids would make one
    # time series per document. The router leaves the matched route in the scope.
    return str(getattr(request.scope.get("route"), "path", "unmatched"))


def latency_middleware(
    metrics: Metrics,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    async def record(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        metrics.http_latency.labels(request.method, _route_template(request), str(response.status_code)).observe(
            time.perf_counter() - started
        )
        return response

    return record
