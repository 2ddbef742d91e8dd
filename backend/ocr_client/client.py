"""``OcrClient``: the backend's only way to the OCR service.

Idempotent calls (``/ocr``, ``GET /models``) run as Retry(Breaker(TimeLimit(call))), like
Resilience4j in Spring: the breaker sees every attempt, a breaker rejection is never
retried, each attempt has its time limit and the whole call a deadline. A stream may be
retried only until the service's status is known; training calls and the admin's choice of
model are neither retried nor guarded by the breaker (a training job must not be started
twice, and an admin should see the service's own answer).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from prometheus_client import CollectorRegistry

from backend.ocr_client.answers import Json, json_of, read_error_body, refuse
from backend.ocr_client.breaker import BreakerSnapshot, BreakerState
from backend.ocr_client.config import OcrClientConfig
from backend.ocr_client.errors import OcrClientError, OcrUnavailable, Unavailability
from backend.ocr_client.metrics import OcrClientMetrics
from backend.ocr_client.replicas import ReplicaSet
from backend.ocr_client.retry import RetryPolicy, Sleep
from backend.ocr_client.stream import PageStream
from backend.ocr_client.training import DocumentSource, TrainingCalls, TrainingRequest, files_of, opened


@dataclass(frozen=True)
class OcrClientState:
    """For the admin page: the best state over all replicas, and each replica's breaker."""

    state: BreakerState
    since: datetime
    replicas: tuple[tuple[str, BreakerSnapshot], ...]


_RANK = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class OcrClient:
    """One per backend process, used from its one event loop: the breakers' bookkeeping never
    awaits, so it needs no lock there, and their state stays in memory (RESILIENCE.md: no
    shared Redis state, which would block the loop and fall back to CLOSED on errors)."""

    def __init__(
        self,
        config: OcrClientConfig,
        registry: CollectorRegistry,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.metrics = OcrClientMetrics(registry)
        self.replicas = ReplicaSet(config, self.metrics, clock=clock, now=now)
        self._retry = RetryPolicy(config, self.metrics, sleep)
        # read= is the longest silence between two chunks; unary calls raise it to their attempt limit.
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(config.stream_idle_s, connect=config.connect_timeout_s),
            transport=transport,
            follow_redirects=False,
        )
        self._training = TrainingCalls(config, self._http)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> OcrClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def ocr_document(
        self,
        document: DocumentSource,
        *,
        model: str | None = None,
        first_page: int | None = None,
        last_page: int | None = None,
    ) -> Json:
        """All pages at once: ``{"pages": [...], "model", "segmentationModel"}``."""
        fields = _ocr_fields(model, first_page, last_page)
        return await self._unary("ocr", "POST", "/ocr", document=document, data=fields)

    async def models(self) -> Json:
        return await self._unary("models", "GET", "/models")

    @asynccontextmanager
    async def stream_pages(
        self,
        document: DocumentSource,
        *,
        model: str | None = None,
        first_page: int | None = None,
        last_page: int | None = None,
    ) -> AsyncIterator[PageStream]:
        """``async with client.stream_pages(path) as events: async for event in events: ...``"""
        fields = _ocr_fields(model, first_page, last_page)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.config.stream_deadline_s
        failed: set[str] = set()

        async def connect(deadline: float) -> httpx.Response:
            async with self.replicas.attempt(failed) as attempt:
                async with asyncio.timeout_at(min(loop.time() + self.config.attempt_timeout_s, deadline)):
                    with opened(document) as file:
                        request = self._http.build_request(
                            "POST", attempt.replica.url + "/ocr/stream", data=fields, files=files_of(file)
                        )
                        response = await self._http.send(request, stream=True)
                    if response.is_success:
                        return response
                    try:
                        body = await read_error_body(response)
                    finally:
                        await response.aclose()
                refuse(response.status_code, body, attempt)

        outcome = "success"
        try:
            response = await self._retry.run(connect, deadline)
            try:
                yield PageStream(response, deadline)
            finally:
                await response.aclose()
        except OcrClientError as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self.metrics.call("stream", outcome, loop.time() - started)

    async def health(self) -> list[tuple[str, Json | OcrClientError]]:
        """Each replica's ``/health`` once, bypassing retry and breaker: a probe for the admin
        page, which must show the service's own word even while the breaker is open."""

        async def probe(url: str) -> Json | OcrClientError:
            try:
                async with asyncio.timeout(self.config.connect_timeout_s * 2):
                    response = await self._http.get(url + "/health")
            except (httpx.HTTPError, TimeoutError) as exc:
                return OcrUnavailable(Unavailability.CONNECTION, f"No answer from {url}: {type(exc).__name__}.")
            if response.is_success:
                try:
                    body = response.json()
                except ValueError:
                    body = None
                if isinstance(body, dict):
                    return body
                return OcrUnavailable(Unavailability.SERVER_ERROR, f"{url} answered /health without a JSON object.")
            return OcrUnavailable(
                Unavailability.SERVER_ERROR, f"{url} answered {response.status_code}: {response.text[:200]}"
            )

        urls = [replica.url for replica in self.replicas.replicas]
        return list(zip(urls, await asyncio.gather(*(probe(url) for url in urls)), strict=True))

    def state(self) -> OcrClientState:
        snapshots = tuple((replica.url, replica.breaker.snapshot()) for replica in self.replicas.replicas)
        best = min((snapshot.state for _, snapshot in snapshots), key=_RANK.__getitem__)
        since = min(snapshot.since for _, snapshot in snapshots if snapshot.state is best)
        return OcrClientState(state=best, since=since, replicas=snapshots)

    def refuses_calls(self) -> bool:
        """Whether every replica's breaker would refuse a call now (open, its wait not over)."""
        return all(replica.breaker.refuses_calls() for replica in self.replicas.replicas)

    # Training: one request each to the training replica, no retry, no breaker.

    async def train(self, training_zip: DocumentSource, request: TrainingRequest) -> Json:
        return await self._training.submit("/train", training_zip, request)

    async def segtrain(self, training_zip: DocumentSource, request: TrainingRequest) -> Json:
        return await self._training.submit("/segtrain", training_zip, request)

    async def training_jobs(self) -> Json:
        """``{"jobs": [...]}``: every job the training service keeps, newest first."""
        return await self._training.jobs()

    async def training_job(self, job_id: str) -> Json:
        return await self._training.job(job_id)

    async def cancel_training(self, job_id: str) -> Json:
        return await self._training.cancel(job_id)

    # Choosing models: admin actions like training (the training replica, its token, one attempt),
    # so the admin sees the service's own answer (404 MODEL_NOT_FOUND, 422 WRONG_MODEL_KIND).

    async def set_default_model(self, name: str | None) -> Json:
        """The recognition model ``/ocr`` reads with when a request names none (None: the
        service's ``OCR_DEFAULT_MODEL``); answers ``{"name": the default now}``."""
        return await self._training.choose("/models/default", name)

    async def set_segmentation_model(self, name: str | None) -> Json:
        """The segmentation model ``/ocr`` finds lines with (None: ``OCR_SEGMENTATION_MODEL``);
        answers ``{"name": in use now, "chosen"}``."""
        return await self._training.choose("/models/segmentation", name)

    async def _unary(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        document: DocumentSource | None = None,
        data: Json | None = None,
    ) -> Json:
        loop = asyncio.get_running_loop()
        started = loop.time()
        failed: set[str] = set()
        timeout = httpx.Timeout(self.config.attempt_timeout_s, connect=self.config.connect_timeout_s)

        async def call(deadline: float) -> Json:
            async with self.replicas.attempt(failed) as attempt:
                async with asyncio.timeout_at(min(loop.time() + self.config.attempt_timeout_s, deadline)):
                    with opened(document) as file:
                        response = await self._http.request(
                            method, attempt.replica.url + path, data=data, files=files_of(file), timeout=timeout
                        )
                return json_of(response, attempt)

        outcome = "success"
        try:
            return await self._retry.run(call, started + self.config.deadline_s)
        except OcrClientError as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self.metrics.call(operation, outcome, loop.time() - started)


def _ocr_fields(model: str | None, first_page: int | None, last_page: int | None) -> Json:
    if first_page is not None and first_page < 1:
        raise ValueError("first_page counts from 1")
    if last_page is not None and last_page < (first_page or 1):
        raise ValueError("last_page must not come before first_page")
    fields: Json = {}
    if model:
        fields["model"] = model
    if first_page is not None:
        fields["firstPage"] = str(first_page)
    if last_page is not None:
        fields["lastPage"] = str(last_page)
    return fields
