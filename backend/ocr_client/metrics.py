"""Prometheus metrics under Resilience4j's names and labels, so existing dashboards work.

Everything is registered on the ``CollectorRegistry`` passed in (the backend's management
registry; a fresh one per test), never on the global default registry.
"""

from __future__ import annotations

from typing import Any

import pybreaker
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from backend.ocr_client.breaker import BreakerState, CircuitBreaker, Outcome, from_pybreaker

# An OCR call reads a whole document (seconds to many minutes); a rejection takes microseconds.
_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

# Resilience4j's label values for the state gauge.
_STATE_LABEL = {BreakerState.CLOSED: "closed", BreakerState.OPEN: "open", BreakerState.HALF_OPEN: "half_open"}


class RetryKind:
    SUCCESSFUL_WITHOUT_RETRY = "successful_without_retry"
    SUCCESSFUL_WITH_RETRY = "successful_with_retry"
    FAILED_WITHOUT_RETRY = "failed_without_retry"
    FAILED_WITH_RETRY = "failed_with_retry"


class OcrClientMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # One-hot; "livemax" so that in multiprocess mode a dead process's state drops out.
        self.breaker_state = Gauge(
            "resilience4j_circuitbreaker_state",
            "The states of the circuit breaker (1 for the current one).",
            ["name", "state"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.breaker_calls = Histogram(
            "resilience4j_circuitbreaker_calls_seconds",
            "Duration of calls the circuit breaker judged, by kind (successful, failed, ignored).",
            ["name", "kind"],
            registry=registry,
            buckets=_BUCKETS,
        )
        self.not_permitted = Counter(
            "resilience4j_circuitbreaker_not_permitted_calls",
            "Calls refused at once by an open circuit breaker.",
            ["name", "kind"],
            registry=registry,
        )
        self.retry_calls = Counter(
            "resilience4j_retry_calls",
            "Calls through the retry, by outcome and whether they were retried.",
            ["name", "kind"],
            registry=registry,
        )
        self.call_seconds = Histogram(
            "ocr_client_call_seconds",
            "Duration of a whole call to the OCR service (all attempts and back-off), by operation and outcome.",
            ["operation", "outcome"],
            registry=registry,
            buckets=_BUCKETS,
        )

    def watch(self, breaker: CircuitBreaker) -> None:
        self.show_state(breaker.name, breaker.state)
        breaker.add_listener(_StateListener(self, breaker.name))

    def judged(self, breaker_name: str, outcome: Outcome, seconds: float) -> None:
        self.breaker_calls.labels(name=breaker_name, kind=outcome.value).observe(seconds)

    def rejected(self, breaker_name: str) -> None:
        self.not_permitted.labels(name=breaker_name, kind="not_permitted").inc()

    def retry(self, client_name: str, kind: str) -> None:
        self.retry_calls.labels(name=client_name, kind=kind).inc()

    def call(self, operation: str, outcome: str, seconds: float) -> None:
        self.call_seconds.labels(operation=operation, outcome=outcome).observe(seconds)

    def show_state(self, name: str, current: BreakerState) -> None:
        for state, label in _STATE_LABEL.items():
            self.breaker_state.labels(name=name, state=label).set(1 if state is current else 0)


class _StateListener(pybreaker.CircuitBreakerListener):
    def __init__(self, metrics: OcrClientMetrics, name: str) -> None:
        self._metrics = metrics
        self._name = name

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        self._metrics.show_state(self._name, from_pybreaker(new_state.name))
