"""The worker pool behind real HTTP: a page that hangs or ends its worker is a 422 for its own
document only; the service stays healthy and reads the next page. Fake-engine workers (see
tests/support/fake_engine.py) make the outcomes deterministic; one test runs real kraken."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from ocr_service.api.deps import Services
from ocr_service.app import create_app
from tests.conftest import make_settings
from tests.ocr_service.test_ocr_api import letter, read_rows
from tests.support.fake_engine import ENGINE, fake_png, tries
from tests.support.servers import RunningApp, start_app
from tests.support.synthetic import to_png


@pytest.fixture(scope="module")
def fake_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    models = tmp_path_factory.mktemp("fake-models")
    running = start_app(create_app(make_settings(models, workers=2, page_timeout_s=0.5), engine=ENGINE))
    yield running
    running.stop()


def post_page(running: RunningApp, png: bytes) -> httpx.Response:
    with running.client() as client:
        return client.post("/ocr", files={"file": ("page.png", png)})


def wait_until(condition: Callable[[], bool], within_s: float = 60) -> None:
    """Wait for an event the test cannot be told about (the service noticing a worker died)."""
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not become true"
        time.sleep(0.02)


def test_a_page_over_the_time_limit_is_422_page_timeout_and_the_next_page_is_read(
    fake_service: RunningApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    timed_out = post_page(fake_service, fake_png("stuck", "hang", log=tmp_path))
    assert timed_out.status_code == 422, timed_out.text
    assert timed_out.json()["code"] == "PAGE_TIMEOUT"
    assert "longer than the limit of 0.5 s" in timed_out.json()["message"]
    # the worker's own watchdog ended it, and its stacks went to the service's log
    assert "Where it hung" in caplog.text and "Timeout (0:00:00.500000)" in caplog.text
    assert [t["page"] for t in tries(tmp_path)] == ["stuck"]  # a hang is not tried again

    read = post_page(fake_service, fake_png("next"))
    assert read.status_code == 200, read.text
    assert [line["text"] for line in read.json()["pages"][0]["lines"]] == ["next"]


def test_concurrent_documents_fail_only_where_a_page_ends_its_worker_twice(
    fake_service: RunningApp, tmp_path: Path
) -> None:
    kinds = ["ok"] * 22 + ["kill"] * 4 + ["kill-once"] * 4
    random.Random(6).shuffle(kinds)

    def send(index: int) -> httpx.Response:
        return post_page(fake_service, fake_png(f"doc{index}", kinds[index], log=tmp_path))

    with ThreadPoolExecutor(max_workers=4) as clients:
        responses = list(clients.map(send, range(len(kinds))))

    for index, (kind, response) in enumerate(zip(kinds, responses, strict=True)):
        if kind == "kill":
            assert response.status_code == 422, (index, response.text)
            assert response.json()["code"] == "PAGE_KILLED_WORKER"
        else:
            assert response.status_code == 200, (index, response.text)
            assert [line["text"] for line in response.json()["pages"][0]["lines"]] == [f"doc{index}"]
    tried = [t["page"] for t in tries(tmp_path)]
    for index, kind in enumerate(kinds):
        assert tried.count(f"doc{index}") == (1 if kind == "ok" else 2), index
    with fake_service.client() as client:
        health = client.get("/health")
    assert health.status_code == 200
    assert health.json()["queue"]["active"] == 0


@pytest.mark.slow
def test_a_worker_killed_while_idle_is_replaced_and_the_next_page_is_read_with_kraken(
    service_factory,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    running = service_factory(make_settings(tmp_path, workers=1))
    services: Services = running.app.state.services
    victim = services.pool.info[0].pid
    os.kill(victim, signal.SIGKILL)  # as the kernel's OOM killer would
    wait_until(lambda: [w.pid for w in services.pool.info] not in ([], [victim]))
    page = letter(51, lines=1).image
    response = post_page(running, to_png(page))
    assert response.status_code == 200, response.text
    assert len(read_rows(response.json()["pages"][0]["lines"])) == 1
