"""The resilient OCR client against a real stand-in OCR server on loopback.

Back-off is recorded, not slept; the breaker's clock is moved by hand. Every test asserts
what reached the server, so "fails fast without the network" is checked, not assumed.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
from pathlib import Path
from typing import Any

import pytest

from backend.ocr_client import (
    BreakerConfig,
    BreakerState,
    OcrRejected,
    OcrStreamError,
    OcrStreamInterrupted,
    OcrUnavailable,
    TrainingRequest,
    Unavailability,
)
from tests.backend.ocr_client_support import HandClock, RecordedSleep, client_config, make_client, sample
from tests.backend.ocr_jobs import page_events
from tests.backend.ocr_standin import PAGE_EVENTS, Drip, Hang, Reply, StandIn, error_body

OCR = "POST /ocr"
STREAM = "POST /ocr/stream"
MODELS = "GET /models"


@pytest.fixture
def document(tmp_path: Path) -> Path:
    path = tmp_path / "letter.pdf"
    path.write_bytes(random.Random(7).randbytes(300_000))
    return path


def test_5xx_is_tried_four_times_with_back_off_2_4_8(standin: StandIn, document: Path) -> None:
    standin.service.plan(OCR, *[Reply(500, error_body("OCR_FAILED", "worker died"))] * 4)
    sleep = RecordedSleep()

    async def go() -> OcrUnavailable:
        client, registry = make_client(client_config(standin.url), sleep)
        async with client:
            with pytest.raises(OcrUnavailable) as caught:
                await client.ocr_document(document)
        assert sample(registry, "resilience4j_retry_calls_total", name="ocr-service", kind="failed_with_retry") == 1
        return caught.value

    error = asyncio.run(go())
    assert error.reason is Unavailability.RETRIES_EXHAUSTED
    assert error.code == "OCR_FAILED"
    assert standin.service.count(OCR) == 4
    assert sleep.waits == [2, 4, 8]


def test_a_call_that_succeeds_on_the_third_attempt_returns_its_answer(standin: StandIn, document: Path) -> None:
    standin.service.plan(OCR, Reply(502, error_body("BAD_GATEWAY")), Reply(503, error_body("MODELS_NOT_READY")))
    sleep = RecordedSleep()

    async def go() -> dict[str, Any]:
        client, registry = make_client(client_config(standin.url), sleep)
        async with client:
            result = await client.ocr_document(document)
        assert sample(registry, "resilience4j_retry_calls_total", name="ocr-service", kind="successful_with_retry") == 1
        return result

    assert asyncio.run(go())["model"] == "tiny"
    assert standin.service.count(OCR) == 3
    assert sleep.waits == [2, 4]


def test_back_off_is_configurable(standin: StandIn) -> None:
    standin.service.plan(MODELS, *[Reply(500)] * 3)
    sleep = RecordedSleep()
    config = client_config(standin.url, attempts=3, backoff_initial_s=0.5, backoff_multiplier=3, backoff_max_s=1)

    async def go() -> None:
        client, _ = make_client(config, sleep)
        async with client:
            with pytest.raises(OcrUnavailable):
                await client.models()

    asyncio.run(go())
    assert sleep.waits == [0.5, 1]
    assert standin.service.count(MODELS) == 3


@pytest.mark.parametrize("status", [400, 404, 409, 413, 415, 422])
def test_a_4xx_is_not_retried_and_carries_the_services_code(standin: StandIn, document: Path, status: int) -> None:
    standin.service.plan(OCR, Reply(status, error_body("CORRUPT_DOCUMENT", "The PDF is damaged.")))
    sleep = RecordedSleep()

    async def go() -> OcrRejected:
        client, registry = make_client(client_config(standin.url), sleep)
        async with client:
            with pytest.raises(OcrRejected) as caught:
                await client.ocr_document(document)
        assert sample(registry, "resilience4j_retry_calls_total", name="ocr-service", kind="failed_without_retry") == 1
        return caught.value

    error = asyncio.run(go())
    assert (error.status, error.code, error.message) == (status, "CORRUPT_DOCUMENT", "The PDF is damaged.")
    assert standin.service.count(OCR) == 1
    assert sleep.waits == []


# One outcome per attempt; a Hang (drawn too) outlives the attempt's time limit.
_OUTCOMES: list[Reply | Hang] = [
    Reply(200, {"models": []}),
    Reply(400, error_body("INVALID_REQUEST")),
    Reply(404, error_body("NOT_FOUND")),
    Reply(422, error_body("UNKNOWN_MODEL")),
    Reply(500, error_body("INTERNAL_ERROR")),
    Reply(502, error_body("BAD_GATEWAY")),
    Reply(503, error_body("SERVICE_BUSY")),
    Reply(504, error_body("GATEWAY_TIMEOUT")),
]


def _expected(script: list[Reply | Hang]) -> tuple[int, str]:
    """The reference: attempts until a 2xx or 4xx, at most four; what the caller gets."""
    for attempt, outcome in enumerate(script, start=1):
        if isinstance(outcome, Reply) and outcome.status < 500:
            return attempt, "ok" if outcome.status == 200 else "rejected"
        if attempt == 4:
            break
    return 4, "unavailable"


def test_random_outcome_sequences_retry_exactly_as_specified(standin: StandIn) -> None:
    rng = random.Random(20261125)
    # A hang costs a real attempt time limit, so it is drawn rarely.
    scripts = [[Hang() if rng.random() < 0.04 else rng.choice(_OUTCOMES) for _ in range(4)] for _ in range(60)]
    assert sum(isinstance(script[0], Hang) for script in scripts) >= 2

    sleep = RecordedSleep()

    async def go() -> None:
        # Far above an answer's time on a busy machine, so only a Hang times out.
        client, _ = make_client(client_config(standin.url, attempt_timeout_s=0.5), sleep)
        async with client:
            for script in scripts:
                await one(client, script)

    async def one(client: Any, script: list[Reply | Hang]) -> None:
        standin.service.reset()
        standin.service.plan(MODELS, *script)
        sleep.waits.clear()
        attempts, outcome = _expected(script)
        try:
            await client.models()
            got = "ok"
        except OcrRejected:
            got = "rejected"
        except OcrUnavailable as exc:
            assert exc.reason is Unavailability.RETRIES_EXHAUSTED
            got = "unavailable"
        assert (got, standin.service.count(MODELS)) == (outcome, attempts), script
        assert sleep.waits == [2, 4, 8][: attempts - 1], script

    asyncio.run(go())


def _opening_breaker(**overrides: Any) -> BreakerConfig:
    values: dict[str, Any] = {"window_size": 4, "minimum_calls": 4, "failure_rate_percent": 50, "open_wait_s": 60}
    values.update(overrides)
    return BreakerConfig(**values)


def test_breaker_opens_on_failure_rate_after_minimum_calls_then_fails_fast(standin: StandIn) -> None:
    standin.service.plan(MODELS, Reply(500), Reply(500), Reply(200, {}), Reply(500))
    clock = HandClock()

    async def go() -> None:
        client, registry = make_client(client_config(standin.url, attempts=1, breaker=_opening_breaker()), clock=clock)
        async with client:
            outcomes = []
            for _ in range(4):
                try:
                    await client.models()
                    outcomes.append("ok")
                except OcrUnavailable:
                    outcomes.append("down")
                outcomes.append(client.state().state)
            assert outcomes == ["down", "CLOSED", "down", "CLOSED", "ok", "CLOSED", "down", "OPEN"]
            for _ in range(5):
                with pytest.raises(OcrUnavailable) as caught:
                    await client.models()
                assert caught.value.reason is Unavailability.CIRCUIT_OPEN
            name = "ocr-service@" + standin.url.removeprefix("http://")
            assert sample(registry, "resilience4j_circuitbreaker_state", name=name, state="open") == 1
            assert sample(registry, "resilience4j_circuitbreaker_state", name=name, state="closed") == 0
            not_permitted = "resilience4j_circuitbreaker_not_permitted_calls_total"
            assert sample(registry, not_permitted, name=name, kind="not_permitted") == 5

    asyncio.run(go())
    assert standin.service.count() == 4


def test_breaker_open_is_not_retried(standin: StandIn) -> None:
    sleep = RecordedSleep()
    breaker = _opening_breaker(window_size=1, minimum_calls=1)
    standin.service.plan(MODELS, *[Reply(500)] * 4)

    async def go() -> OcrUnavailable:
        client, _ = make_client(client_config(standin.url, breaker=breaker), sleep, HandClock())
        async with client:
            with pytest.raises(OcrUnavailable) as caught:
                await client.models()
        return caught.value

    # The first failure opens the breaker; the retry's second attempt is refused and not retried.
    assert asyncio.run(go()).reason is Unavailability.CIRCUIT_OPEN
    assert standin.service.count() == 1
    assert sleep.waits == [2]


def test_breaker_opens_on_slow_calls(standin: StandIn) -> None:
    standin.service.plan(MODELS, *[Reply(200, {}, delay_s=0.06)] * 2)
    breaker = BreakerConfig(window_size=2, minimum_calls=2, slow_call_s=0.05, slow_call_rate_percent=100)

    async def go() -> None:
        client, _ = make_client(client_config(standin.url, attempts=1, breaker=breaker))
        async with client:
            await client.models()
            assert client.state().state is BreakerState.CLOSED
            await client.models()
            assert client.state().state is BreakerState.OPEN
            with pytest.raises(OcrUnavailable):
                await client.models()

    asyncio.run(go())
    assert standin.service.count() == 2


def test_a_4xx_counts_neither_for_nor_against_the_breaker(standin: StandIn) -> None:
    breaker = _opening_breaker(window_size=2, minimum_calls=2, half_open_permits=1)
    clock = HandClock()
    standin.service.plan(MODELS, Reply(500), *[Reply(422, error_body("UNKNOWN_MODEL"))] * 10, Reply(500))

    async def go() -> None:
        client, _ = make_client(client_config(standin.url, attempts=1, breaker=breaker), clock=clock)
        async with client:
            with pytest.raises(OcrUnavailable):
                await client.models()
            for _ in range(10):
                with pytest.raises(OcrRejected):
                    await client.models()
            snapshot = client.state().replicas[0][1]
            assert (snapshot.state, snapshot.calls_in_window) == (BreakerState.CLOSED, 1)
            with pytest.raises(OcrUnavailable):
                await client.models()
            assert client.state().state is BreakerState.OPEN
            # Half-open: a 4xx probe neither closes nor re-opens it, and frees its permit.
            clock.advance(60)
            standin.service.plan(MODELS, Reply(422, error_body("UNKNOWN_MODEL")), Reply(200, {}))
            with pytest.raises(OcrRejected):
                await client.models()
            assert client.state().state is BreakerState.HALF_OPEN
            await client.models()
            assert client.state().state is BreakerState.CLOSED

    asyncio.run(go())


def _open_then_wait(clock: HandClock) -> BreakerConfig:
    return BreakerConfig(window_size=1, minimum_calls=1, open_wait_s=60, half_open_permits=3, failure_rate_percent=50)


async def _trip(client: Any, standin: StandIn, clock: HandClock) -> None:
    standin.service.plan(MODELS, Reply(500))
    with pytest.raises(OcrUnavailable):
        await client.models()
    assert client.state().state is BreakerState.OPEN
    clock.advance(59.9)
    with pytest.raises(OcrUnavailable):
        await client.models()
    clock.advance(0.1)


def test_half_open_lets_exactly_the_permitted_probes_through(standin: StandIn) -> None:
    clock = HandClock()
    standin.service.plan(MODELS, Reply(500), Hang(), Hang(), Hang())

    async def go() -> list[str]:
        client, _ = make_client(client_config(standin.url, attempts=1, breaker=_open_then_wait(clock)), clock=clock)
        async with client:
            with pytest.raises(OcrUnavailable):
                await client.models()
            clock.advance(60)

            async def call() -> str:
                try:
                    await client.models()
                    return "ok"
                except OcrUnavailable as exc:
                    return exc.reason.value

            calls = [asyncio.create_task(call()) for _ in range(6)]
            while standin.service.in_flight < 3:
                await asyncio.sleep(0.005)
            refused = [task for task in calls if task.done()]
            assert len(refused) == 3
            assert client.state().state is BreakerState.HALF_OPEN
            standin.service.release()
            results = await asyncio.gather(*calls)
            assert client.state().state is BreakerState.CLOSED
            return results

    results = asyncio.run(go())
    assert sorted(results) == ["circuit_open"] * 3 + ["ok"] * 3
    assert standin.service.count() == 4


@pytest.mark.parametrize(
    ("probes", "after"),
    [
        ((200, 200, 200), BreakerState.CLOSED),
        ((200, 500, 200), BreakerState.CLOSED),
        ((500, 200, 500), BreakerState.OPEN),
        ((500, 500, 500), BreakerState.OPEN),
    ],
)
def test_half_open_probes_are_judged_as_a_group(standin: StandIn, probes: tuple[int, ...], after: str) -> None:
    clock = HandClock()

    async def go() -> None:
        client, _ = make_client(client_config(standin.url, attempts=1, breaker=_open_then_wait(clock)), clock=clock)
        async with client:
            await _trip(client, standin, clock)
            standin.service.plan(MODELS, *[Reply(status, {}) for status in probes])
            for index, _status in enumerate(probes):
                try:
                    await client.models()
                except OcrUnavailable:
                    pass
                expected = BreakerState.HALF_OPEN if index < len(probes) - 1 else after
                assert client.state().state is expected

    asyncio.run(go())
    assert standin.service.count() == 1 + len(probes)


def test_each_attempt_has_its_time_limit(standin: StandIn) -> None:
    standin.service.plan(MODELS, Hang())
    sleep = RecordedSleep()

    async def go() -> dict[str, Any]:
        # Long enough that the answering attempt never hits it on a loaded machine; the hanging
        # one always does (it waits for a gate nobody opens).
        client, _ = make_client(client_config(standin.url, attempt_timeout_s=3), sleep)
        async with client:
            return await client.models()

    assert asyncio.run(go())["models"][0]["name"] == "tiny"
    assert standin.service.count() == 2
    assert sleep.waits == [2]


def test_the_deadline_ends_a_call_that_would_retry_past_it(standin: StandIn) -> None:
    standin.service.plan(MODELS, Hang())
    sleep = RecordedSleep()

    async def go() -> OcrUnavailable:
        client, _ = make_client(client_config(standin.url, attempt_timeout_s=10, deadline_s=0.3), sleep)
        async with client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(OcrUnavailable) as caught:
                await client.models()
            assert loop.time() - started < 2
        return caught.value

    assert asyncio.run(go()).reason is Unavailability.DEADLINE
    assert standin.service.count() == 1
    assert sleep.waits == []


def test_the_deadline_stops_a_dripping_stream(standin: StandIn, document: Path) -> None:
    line = {"type": "line", "page": 1, "index": 0, "text": "…", "confidence": 0.5}
    standin.service.plan(STREAM, Drip((PAGE_EVENTS[0], line), interval_s=0.02, forever=True))

    async def go() -> tuple[int, OcrStreamInterrupted]:
        # Idle limit far above the drip interval: only the deadline can end this stream.
        client, _ = make_client(client_config(standin.url, stream_deadline_s=0.4, stream_idle_s=5))
        events = 0
        async with client:
            with pytest.raises(OcrStreamInterrupted) as caught:
                async with client.stream_pages(document) as stream:
                    async for _ in stream:
                        events += 1
        return events, caught.value

    events, error = asyncio.run(go())
    assert error.reason is Unavailability.DEADLINE
    assert events > 3
    assert standin.service.count(STREAM) == 1


def test_a_stream_is_read_to_its_done_event(standin: StandIn, document: Path) -> None:
    events = page_events(4)
    standin.service.plan(STREAM, Drip(events))

    async def go() -> list[dict[str, Any]]:
        client, _ = make_client(client_config(standin.url))
        async with client:
            async with client.stream_pages(document, model="tiny", first_page=2, last_page=3) as stream:
                return [event async for event in stream]

    # Pages 2 and 3 of the four, with their own numbers, then the end.
    assert asyncio.run(go()) == [e for e in events if e.get("page") in (2, 3) or e["type"] == "done"]
    seen = standin.service.seen[0]
    assert seen.fields == {"model": "tiny", "firstPage": "2", "lastPage": "3"}
    assert seen.file_sha256 == hashlib.sha256(document.read_bytes()).hexdigest()


def test_a_stream_connection_is_retried_until_the_status_is_known(standin: StandIn, document: Path) -> None:
    standin.service.plan(STREAM, Reply(503, error_body("MODELS_NOT_READY")), Reply(500))
    sleep = RecordedSleep()

    async def go() -> list[dict[str, Any]]:
        client, _ = make_client(client_config(standin.url), sleep)
        async with client:
            async with client.stream_pages(document) as stream:
                return [event async for event in stream]

    assert asyncio.run(go())[-1]["type"] == "done"
    assert standin.service.count(STREAM) == 3
    assert sleep.waits == [2, 4]
    assert {seen.file_bytes for seen in standin.service.seen} == {300_000}


def test_a_stream_that_delivered_lines_is_never_retried(standin: StandIn, document: Path) -> None:
    standin.service.plan(STREAM, Drip(PAGE_EVENTS, die_after=2))
    sleep = RecordedSleep()

    async def go() -> tuple[list[str], OcrStreamInterrupted]:
        client, _ = make_client(client_config(standin.url), sleep)
        got: list[str] = []
        async with client:
            with pytest.raises(OcrStreamInterrupted) as caught:
                async with client.stream_pages(document) as stream:
                    async for event in stream:
                        got.append(event["type"])
        return got, caught.value

    got, error = asyncio.run(go())
    assert got == ["page", "line"]
    assert error.reason is Unavailability.STREAM_INTERRUPTED
    assert standin.service.count(STREAM) == 1
    assert sleep.waits == []


def test_a_stream_that_stops_without_done_is_interrupted(standin: StandIn, document: Path) -> None:
    standin.service.plan(STREAM, Drip(PAGE_EVENTS[:2]))

    async def go() -> None:
        client, _ = make_client(client_config(standin.url))
        async with client:
            with pytest.raises(OcrStreamInterrupted):
                async with client.stream_pages(document) as stream:
                    async for _ in stream:
                        pass

    asyncio.run(go())


def test_a_streams_error_line_is_raised_with_its_code(standin: StandIn, document: Path) -> None:
    error_line = {"type": "error", "code": "PAGE_TIMEOUT", "message": "Page 1 took too long."}
    standin.service.plan(STREAM, Drip((PAGE_EVENTS[0], error_line)))

    async def go() -> OcrStreamError:
        client, _ = make_client(client_config(standin.url))
        async with client:
            with pytest.raises(OcrStreamError) as caught:
                async with client.stream_pages(document) as stream:
                    async for _ in stream:
                        pass
        return caught.value

    error = asyncio.run(go())
    assert (error.code, error.message) == ("PAGE_TIMEOUT", "Page 1 took too long.")


def test_a_stream_refused_with_a_4xx_is_not_retried(standin: StandIn, document: Path) -> None:
    standin.service.plan(STREAM, Reply(413, error_body("TOO_MANY_PAGES", "Over 500 pages.")))
    sleep = RecordedSleep()

    async def go() -> OcrRejected:
        client, _ = make_client(client_config(standin.url), sleep)
        async with client:
            with pytest.raises(OcrRejected) as caught:
                async with client.stream_pages(document):
                    pass
        return caught.value

    assert asyncio.run(go()).code == "TOO_MANY_PAGES"
    assert standin.service.count(STREAM) == 1
    assert sleep.waits == []


class _ReadSpy(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[int] = []

    def read(self, size: int | None = -1) -> bytes:
        self.reads.append(-1 if size is None else size)
        return super().read(size)


def test_the_upload_is_streamed_in_chunks_and_resent_whole_on_retry(standin: StandIn) -> None:
    data = random.Random(3).randbytes(1_000_000)
    spy = _ReadSpy(data)
    four_pages = [{"page": n, "width": 100, "height": 80, "lines": []} for n in range(1, 5)]
    standin.service.plan(OCR, Reply(500), Reply(200, {"pages": four_pages, "model": "tiny"}))

    async def go() -> dict[str, Any]:
        client, _ = make_client(client_config(standin.url), RecordedSleep())
        async with client:
            return await client.ocr_document(spy, first_page=4)

    assert asyncio.run(go())["pages"] == four_pages[3:]
    assert spy.reads and all(0 < size <= 64 * 1024 for size in spy.reads)
    digest = hashlib.sha256(data).hexdigest()
    assert [(seen.file_sha256, seen.fields) for seen in standin.service.seen] == [(digest, {"firstPage": "4"})] * 2


@pytest.mark.parametrize(("first", "last"), [(0, None), (-3, 5), (5, 4), (None, 0)])
def test_a_page_range_that_cannot_be_is_refused_before_any_call(standin: StandIn, first: Any, last: Any) -> None:
    async def go() -> None:
        client, _ = make_client(client_config(standin.url))
        async with client:
            with pytest.raises(ValueError, match="page"):
                await client.ocr_document(io.BytesIO(b"x"), first_page=first, last_page=last)

    asyncio.run(go())
    assert standin.service.count() == 0


def test_training_calls_are_neither_retried_nor_stopped_by_the_breaker(standin: StandIn, tmp_path: Path) -> None:
    archive = tmp_path / "lines.zip"
    archive.write_bytes(b"PK\x05\x06" + bytes(18))
    clock = HandClock()
    sleep = RecordedSleep()
    breaker = BreakerConfig(window_size=1, minimum_calls=1, open_wait_s=60)
    standin.service.plan(MODELS, Reply(500))
    standin.service.plan(
        "POST /train", Reply(500, error_body("INTERNAL_ERROR")), Reply(409, error_body("TRAINING_BUSY"))
    )

    async def go() -> None:
        client, _ = make_client(client_config(standin.url, attempts=1, breaker=breaker), sleep, clock)
        async with client:
            with pytest.raises(OcrUnavailable):
                await client.models()
            assert client.state().state is BreakerState.OPEN
            request = TrainingRequest(model_name="kurrent", epochs=3)
            with pytest.raises(OcrUnavailable) as unavailable:
                await client.train(archive, request)
            assert unavailable.value.code == "INTERNAL_ERROR"
            with pytest.raises(OcrRejected) as busy:
                await client.train(archive, request)
            assert (busy.value.status, busy.value.code) == (409, "TRAINING_BUSY")
            assert (await client.segtrain(archive, request))["jobId"] == "job-2"
            assert (await client.training_job("job/1"))["path"] == "/train/jobs/job/1"
            assert (await client.cancel_training("job-1"))["path"] == "/train/jobs/job-1"

    asyncio.run(go())
    trains = [seen for seen in standin.service.seen if seen.path in ("/train", "/segtrain")]
    assert len(trains) == 3
    assert all(seen.headers["x-training-token"] == "s3cret" for seen in standin.service.seen[1:])
    assert trains[0].fields == {"modelName": "kurrent", "epochs": "3"}
    assert sleep.waits == []


def test_health_asks_every_replica_even_with_the_breaker_open(standin: StandIn) -> None:
    clock = HandClock()
    breaker = BreakerConfig(window_size=1, minimum_calls=1, open_wait_s=60)
    standin.service.plan(MODELS, Reply(500))

    async def go() -> list[Any]:
        client, _ = make_client(client_config(standin.url, attempts=1, breaker=breaker), clock=clock)
        async with client:
            with pytest.raises(OcrUnavailable):
                await client.models()
            return await client.health()

    assert asyncio.run(go()) == [(standin.url, {"status": "ok"})]


def test_a_silent_stream_ends_at_the_idle_limit_and_is_not_retried(standin: StandIn, document: Path) -> None:
    # The idle limit is also the wait for the answer's status: 0.2 s was too short for the
    # stand-in (a thread of this process) to read the upload and answer while the whole suite
    # ran on 2 cores; a limit missed before the status is a connection error, rightly retried.
    standin.service.plan(STREAM, Drip(PAGE_EVENTS, interval_s=6))
    sleep = RecordedSleep()

    async def go() -> OcrStreamInterrupted:
        client, _ = make_client(client_config(standin.url, stream_idle_s=1.5), sleep)
        async with client:
            with pytest.raises(OcrStreamInterrupted) as caught:
                async with client.stream_pages(document) as stream:
                    async for _ in stream:
                        pass
        return caught.value

    error = asyncio.run(go())
    assert error.reason is Unavailability.STREAM_INTERRUPTED
    assert "ReadTimeout" in error.message
    assert standin.service.count(STREAM) == 1
    assert sleep.waits == []


def test_a_stream_with_the_breaker_open_fails_without_the_network(standin: StandIn, document: Path) -> None:
    breaker = BreakerConfig(window_size=1, minimum_calls=1, open_wait_s=60)
    standin.service.plan(STREAM, Reply(500))

    async def go() -> None:
        client, _ = make_client(client_config(standin.url, breaker=breaker), RecordedSleep(), HandClock())
        async with client:
            for _ in range(3):
                with pytest.raises(OcrUnavailable) as caught:
                    async with client.stream_pages(document):
                        pass
                assert caught.value.reason is Unavailability.CIRCUIT_OPEN

    asyncio.run(go())
    assert standin.service.count() == 1


def test_leaving_a_stream_early_counts_as_a_success_not_a_failure(standin: StandIn, document: Path) -> None:
    breaker = BreakerConfig(window_size=2, minimum_calls=1, failure_rate_percent=50)

    async def go() -> None:
        client, registry = make_client(client_config(standin.url, breaker=breaker), clock=HandClock())
        async with client:
            async with client.stream_pages(document) as stream:
                async for _ in stream:
                    break
            snapshot = client.state().replicas[0][1]
            assert (snapshot.state, snapshot.calls_in_window, snapshot.failure_rate_percent) == ("CLOSED", 1, 0)
            assert sample(registry, "ocr_client_call_seconds_count", operation="stream", outcome="success") == 1

    asyncio.run(go())


def test_a_busy_service_is_retried_but_does_not_open_the_breaker(standin: StandIn) -> None:
    breaker = BreakerConfig(window_size=1, minimum_calls=1)
    standin.service.plan(MODELS, *[Reply(503, error_body("SERVICE_BUSY"))] * 4)
    sleep = RecordedSleep()

    async def go() -> OcrUnavailable:
        client, registry = make_client(client_config(standin.url, breaker=breaker), sleep, HandClock())
        async with client:
            with pytest.raises(OcrUnavailable) as caught:
                await client.models()
            assert client.state().state is BreakerState.CLOSED
            calls = "resilience4j_circuitbreaker_calls_seconds_count"
            name = "ocr-service@" + standin.url.removeprefix("http://")
            assert sample(registry, calls, name=name, kind="ignored") == 4
            assert sample(registry, "ocr_client_call_seconds_count", operation="models", outcome="OcrUnavailable") == 1
        return caught.value

    assert asyncio.run(go()).code == "SERVICE_BUSY"
    assert standin.service.count() == 4
    assert sleep.waits == [2, 4, 8]
