"""Several OCR service replicas, and a stand-in server in a process of its own that is
SIGSTOPped or killed — the failures a real deployment sees."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.ocr_client import BreakerConfig, BreakerState, OcrUnavailable, Unavailability
from tests.backend.ocr_client_support import HandClock, RecordedSleep, client_config, make_client
from tests.backend.ocr_standin import Hang, Reply, StandIn, start_standin

MODELS = "GET /models"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def two() -> Iterator[tuple[StandIn, StandIn]]:
    first, second = start_standin(), start_standin()
    yield first, second
    first.stop()
    second.stop()


def test_calls_are_spread_to_the_least_busy_replica(two: tuple[StandIn, StandIn]) -> None:
    first, second = two
    first.service.plan(MODELS, *[Hang()] * 3)
    second.service.plan(MODELS, *[Hang()] * 3)

    async def go() -> None:
        client, _ = make_client(client_config(first.url, second.url))
        async with client:
            calls = [asyncio.create_task(client.models()) for _ in range(6)]
            while first.service.in_flight + second.service.in_flight < 6:
                await asyncio.sleep(0.005)
            assert (first.service.in_flight, second.service.in_flight) == (3, 3)
            first.service.release()
            second.service.release()
            await asyncio.gather(*calls)

    asyncio.run(go())


def test_a_retry_goes_to_another_replica(two: tuple[StandIn, StandIn]) -> None:
    first, second = two
    first.service.plan(MODELS, Reply(500))
    second.service.plan(MODELS, Reply(500))
    sleep = RecordedSleep()

    async def go() -> None:
        client, _ = make_client(client_config(first.url, second.url), sleep)
        async with client:
            await client.models()

    asyncio.run(go())
    # First to the first replica, the retry to the other; with both failed, in turn again.
    assert (first.service.count(), second.service.count()) == (2, 1)
    assert sleep.waits == [2, 4]


def test_a_replica_whose_breaker_opened_is_skipped_without_a_request(two: tuple[StandIn, StandIn]) -> None:
    first, second = two
    breaker = BreakerConfig(window_size=2, minimum_calls=2, failure_rate_percent=100, open_wait_s=60)
    first.service.plan(MODELS, Reply(500), Reply(500))
    clock = HandClock()

    async def go() -> None:
        client, _ = make_client(client_config(first.url, second.url, attempts=1, breaker=breaker), clock=clock)
        async with client:
            while client.replicas.replicas[0].breaker.state is BreakerState.CLOSED:
                try:
                    await client.models()
                except OcrUnavailable:
                    pass
            before = first.service.count()
            for _ in range(10):
                await client.models()
            assert first.service.count() == before
            state = client.state()
            assert state.state is BreakerState.CLOSED
            assert [snapshot.state for _, snapshot in state.replicas] == [BreakerState.OPEN, BreakerState.CLOSED]

    asyncio.run(go())
    assert first.service.count() == 2


def test_when_every_breaker_is_open_the_call_fails_at_once(two: tuple[StandIn, StandIn]) -> None:
    first, second = two
    breaker = BreakerConfig(window_size=1, minimum_calls=1, open_wait_s=60)
    first.service.plan(MODELS, Reply(500))
    second.service.plan(MODELS, Reply(500))

    async def go() -> None:
        client, _ = make_client(client_config(first.url, second.url, attempts=1, breaker=breaker), clock=HandClock())
        async with client:
            for _ in range(2):
                with pytest.raises(OcrUnavailable):
                    await client.models()
            with pytest.raises(OcrUnavailable) as caught:
                await client.models()
            assert caught.value.reason is Unavailability.CIRCUIT_OPEN
            assert client.state().state is BreakerState.OPEN

    asyncio.run(go())
    assert (first.service.count(), second.service.count()) == (1, 1)


@pytest.fixture
def process_server() -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.backend.ocr_standin"], stdout=subprocess.PIPE, text=True, cwd=REPO, env=env
    )
    assert process.stdout is not None
    port = int(process.stdout.readline())
    yield process, f"http://127.0.0.1:{port}"
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        process.terminate()
    process.wait(timeout=30)


def test_a_sigstopped_service_times_out_each_attempt_and_recovers(
    process_server: tuple[subprocess.Popen[str], str],
) -> None:
    process, url = process_server
    sleep = RecordedSleep()

    async def go() -> OcrUnavailable:
        client, _ = make_client(client_config(url, attempt_timeout_s=0.3, connect_timeout_s=5), sleep)
        async with client:
            await client.models()
            process.send_signal(signal.SIGSTOP)
            try:
                with pytest.raises(OcrUnavailable) as caught:
                    await client.models()
            finally:
                process.send_signal(signal.SIGCONT)
            assert (await client.models())["models"][0]["name"] == "tiny"
        return caught.value

    error = asyncio.run(go())
    assert error.reason is Unavailability.RETRIES_EXHAUSTED
    assert "TimeoutError" in error.message
    assert sleep.waits == [2, 4, 8]


def test_a_killed_service_is_tried_four_times_then_reported_unavailable(
    process_server: tuple[subprocess.Popen[str], str],
) -> None:
    process, url = process_server
    sleep = RecordedSleep()

    async def go() -> OcrUnavailable:
        client, _ = make_client(client_config(url), sleep)
        async with client:
            await client.models()
            process.kill()
            process.wait(timeout=30)
            with pytest.raises(OcrUnavailable) as caught:
                await client.models()
        return caught.value

    error = asyncio.run(go())
    assert error.reason is Unavailability.RETRIES_EXHAUSTED
    assert "ConnectError" in error.message
    assert sleep.waits == [2, 4, 8]
