"""Helpers for the OCR client tests: a recorded sleep, a hand-moved clock, small configs."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from backend.ocr_client import BreakerConfig, OcrClient, OcrClientConfig

# A breaker that never opens unless a test asks for one: failure and slow rates over a
# window far longer than any test.
QUIET_BREAKER = BreakerConfig(window_size=1000, minimum_calls=1000, open_wait_s=60)


class RecordedSleep:
    """Stands in for asyncio.sleep in the retry: records the back-off, waits for nothing."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class HandClock:
    """The breaker's monotonic clock, moved only by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def client_config(*urls: str, breaker: BreakerConfig = QUIET_BREAKER, **overrides: Any) -> OcrClientConfig:
    values: dict[str, Any] = {
        "urls": urls,
        "attempts": 4,
        "attempt_timeout_s": 10.0,
        "deadline_s": 30.0,
        "stream_deadline_s": 30.0,
        "stream_idle_s": 10.0,
        "connect_timeout_s": 2.0,
        "training_timeout_s": 10.0,
        "training_token": "s3cret",
        "breaker": breaker,
    }
    values.update(overrides)
    return OcrClientConfig(**values)


def make_client(
    config: OcrClientConfig, sleep: RecordedSleep | None = None, clock: HandClock | None = None
) -> tuple[OcrClient, CollectorRegistry]:
    registry = CollectorRegistry()
    kwargs: dict[str, Any] = {}
    if sleep is not None:
        kwargs["sleep"] = sleep
    if clock is not None:
        kwargs["clock"] = clock
    return OcrClient(config, registry, **kwargs), registry


def sample(registry: CollectorRegistry, metric: str, **labels: str) -> float:
    value = registry.get_sample_value(metric, labels)
    return 0.0 if value is None else value
