"""Retry (tenacity) around one idempotent call, inside an overall deadline.

Retried: 500/502/503/504, connect and read errors, a broken connection, time-outs (each
attempt's own limit). Never retried: a 4xx (:class:`OcrRejected`), a breaker rejection, and
anything else the attempt raises. "3 retries with 2/4/8 s" is 4 attempts in all, as in
Resilience4j; when the next back-off would end past the deadline the call stops at once
instead of sleeping into it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential
from tenacity.stop import stop_base

from backend.ocr_client.config import OcrClientConfig
from backend.ocr_client.errors import OcrUnavailable, Unavailability
from backend.ocr_client.metrics import OcrClientMetrics, RetryKind

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})


class ServerFailureError(Exception):
    """A 5xx answer: worth another attempt, and the last one's code is reported."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ServerFailureError):
        return exc.status in RETRYABLE_STATUSES
    if isinstance(exc, httpx.PoolTimeout):
        # Our own connection pool is full: another attempt would only queue behind it.
        return False
    return isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError | TimeoutError)


class _StopAtDeadline(stop_base):
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return asyncio.get_running_loop().time() + retry_state.upcoming_sleep >= self.deadline


class RetryPolicy:
    def __init__(self, config: OcrClientConfig, metrics: OcrClientMetrics, sleep: Sleep = asyncio.sleep) -> None:
        self.config = config
        self.metrics = metrics
        self.sleep = sleep

    async def run(self, attempt: Callable[[float], Awaitable[T]], deadline: float) -> T:
        """Call ``attempt(deadline)`` until it succeeds, fails for good or the deadline
        (event-loop time) passes; the attempt keeps its own time limit within ``deadline``."""
        attempts = 0

        async def counted() -> T:
            nonlocal attempts
            attempts += 1
            return await attempt(deadline)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.attempts) | _StopAtDeadline(deadline),
            wait=wait_exponential(
                multiplier=self.config.backoff_initial_s,
                exp_base=self.config.backoff_multiplier,
                max=self.config.backoff_max_s,
            ),
            retry=retry_if_exception(is_retryable),
            sleep=self.sleep,
            reraise=True,
        )
        try:
            result: T = await retrying(counted)
        except BaseException as exc:
            kind = RetryKind.FAILED_WITH_RETRY if attempts > 1 else RetryKind.FAILED_WITHOUT_RETRY
            self.metrics.retry(self.config.name, kind)
            if is_retryable(exc):
                raise self._unavailable(exc, attempts, deadline) from exc
            raise
        kind = RetryKind.SUCCESSFUL_WITH_RETRY if attempts > 1 else RetryKind.SUCCESSFUL_WITHOUT_RETRY
        self.metrics.retry(self.config.name, kind)
        return result

    def _unavailable(self, exc: BaseException, attempts: int, deadline: float) -> OcrUnavailable:
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        if asyncio.get_running_loop().time() >= deadline or attempts < self.config.attempts:
            reason = Unavailability.DEADLINE
            message = f"The OCR service did not answer in time ({tries} before the deadline)."
        else:
            reason = Unavailability.RETRIES_EXHAUSTED
            message = f"The OCR service could not be reached ({tries})."
        if isinstance(exc, ServerFailureError):
            return OcrUnavailable(reason, f"{message} Last answer: {exc.status} {exc.message}", code=exc.code)
        return OcrUnavailable(reason, f"{message} Last error: {type(exc).__name__} {exc}".rstrip())
