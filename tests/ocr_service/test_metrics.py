"""The OCR service's own metrics, as Prometheus scrapes them from the management app.

Pages read and the page-time histograms are counted in the service process when a worker's
result arrives; refusals when admission says no; every route by its template. /metrics is on
the management port only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ocr_service.api.deps import Services
from ocr_service.app import create_app, create_management_app
from ocr_service.engine.pipeline import ModelCache, PageResult
from ocr_service.metrics import ServiceMetrics
from ocr_service.model_ref import ModelRef
from tests.conftest import make_settings
from tests.ocr_service.test_ocr_api import letter
from tests.support.fake_engine import ENGINE, fake_png
from tests.support.servers import RunningApp, start_app
from tests.support.synthetic import to_png

ROOT = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(services: Services) -> Samples:
    """Every sample the management app's /metrics serves, by name and labels."""
    response = TestClient(create_management_app(services)).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_until(condition: Callable[[], bool], within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not become true"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    """One fake-engine worker and no queue: a second document is refused while one is read."""
    settings = make_settings(tmp_path_factory.mktemp("metrics-models"), workers=1, queue_size=0, page_timeout_s=3)
    running = start_app(create_app(settings, engine=ENGINE))
    yield running
    running.stop()


def services_of(running: RunningApp) -> Services:
    services: Services = running.app.state.services
    return services


@pytest.mark.slow
def test_a_page_read_with_kraken_counts_a_page_and_its_seconds(shared_service: RunningApp) -> None:
    services = services_of(shared_service)
    before = scrape(services)
    page = letter(71, lines=1, words=3).image
    with shared_service.client() as client:
        response = client.post("/ocr", files={"file": ("page.png", to_png(page))}, data={"model": "tiny"})
    assert response.status_code == 200, response.text
    after = scrape(services)

    assert (
        value(after, "ocr_service_pages_total", outcome="read")
        == value(before, "ocr_service_pages_total", outcome="read") + 1
    )
    spent = {}
    for stage in ("segmentation", "recognition", "page"):
        count = "ocr_service_page_seconds_count"
        assert value(after, count, stage=stage) == value(before, count, stage=stage) + 1, stage
        spent[stage] = value(after, "ocr_service_page_seconds_sum", stage=stage) - value(
            before, "ocr_service_page_seconds_sum", stage=stage
        )
        assert spent[stage] > 0, stage
    # The stages are parts of the page's time, measured in the worker.
    assert spent["segmentation"] + spent["recognition"] <= spent["page"]
    route = {"method": "POST", "route": "/ocr", "status": "200"}
    assert value(after, "ocr_service_http_request_duration_seconds_count", **route) == (
        value(before, "ocr_service_http_request_duration_seconds_count", **route) + 1
    )


def test_a_refused_document_and_a_page_over_its_time_are_counted(one_worker: RunningApp) -> None:
    services = services_of(one_worker)
    before = scrape(services)
    held: list[httpx.Response] = []

    def hang() -> None:
        with one_worker.client() as client:
            held.append(client.post("/ocr", files={"file": ("p.png", fake_png("stuck", "hang"))}))

    holder = threading.Thread(target=hang)
    holder.start()
    wait_until(lambda: services.ocr.admission.active == 1)
    assert value(scrape(services), "ocr_service_documents_in_flight") == 1
    with one_worker.client() as client:
        refused = client.post("/ocr", files={"file": ("p.png", fake_png("second"))})
    assert refused.status_code == 503 and refused.json()["code"] == "SERVICE_BUSY"
    holder.join(timeout=30)
    assert held[0].json()["code"] == "PAGE_TIMEOUT"
    after = scrape(services)

    busy = "ocr_service_refusals_total"
    assert value(after, busy, reason="SERVICE_BUSY") == value(before, busy, reason="SERVICE_BUSY") + 1
    assert value(after, busy, reason="MODELS_NOT_READY") == value(before, busy, reason="MODELS_NOT_READY")
    pages = "ocr_service_pages_total"
    assert value(after, pages, outcome="PAGE_TIMEOUT") == value(before, pages, outcome="PAGE_TIMEOUT") + 1
    assert value(after, pages, outcome="read") == value(before, pages, outcome="read")
    refused_route = {"method": "POST", "route": "/ocr", "status": "503"}
    count = "ocr_service_http_request_duration_seconds_count"
    assert value(after, count, **refused_route) == value(before, count, **refused_route) + 1
    assert value(after, "ocr_service_documents_in_flight") == 0


def test_the_workers_and_training_jobs_are_served_as_they_are(one_worker: RunningApp) -> None:
    services = services_of(one_worker)
    wait_until(lambda: len(services.pool.info) == 1)
    samples = scrape(services)
    assert value(samples, "ocr_service_workers_alive") == 1
    assert value(samples, "ocr_service_workers_configured") == 1
    assert value(samples, "ocr_service_documents_limit") == 1
    for status in ("QUEUED", "RUNNING", "DONE", "FAILED", "CANCELLED"):
        assert ("ocr_service_training_jobs", frozenset({("status", status)})) in samples


def test_routes_are_counted_by_template_never_by_raw_path(one_worker: RunningApp) -> None:
    with one_worker.client() as client:
        for job in ("a" * 32, "b" * 32):
            client.get(f"/train/jobs/{job}")
    routes = {dict(labels).get("route") for name, labels in scrape(services_of(one_worker)) if "http_request" in name}
    assert "/train/jobs/{job_id}" in routes
    assert not any(route and ("a" * 32 in route or "b" * 32 in route) for route in routes)


def test_metrics_are_served_on_the_management_app_only(one_worker: RunningApp) -> None:
    with one_worker.client() as client:
        assert client.get("/metrics").status_code == 404
        assert client.get("/health").status_code == 200
    management = TestClient(create_management_app(services_of(one_worker)))
    assert management.get("/health").json()["status"] == "ok"
    assert management.get("/ocr").status_code in (404, 405)


# --- python -m ocr_service serves both ports ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_the_service_serves_the_management_port_beside_the_public_one(tmp_path: Path) -> None:
    public, management = _free_port(), _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OCR_MODELS_DIR": str(tmp_path / "models"),
        "OCR_TRAINING_DIR": str(tmp_path / "training"),
        "OCR_WORKERS": "1",
        "OCR_MEMORY_LIMIT_MB": "16384",
        "OCR_PORT": str(public),
        "OCR_MANAGEMENT_PORT": str(management),
    }
    process = subprocess.Popen([sys.executable, "-m", "ocr_service"], env=env, cwd=tmp_path)
    try:
        with httpx.Client(timeout=5) as client:

            def healthy() -> bool:
                try:
                    return client.get(f"http://127.0.0.1:{public}/health").status_code == 200
                except httpx.TransportError:
                    assert process.poll() is None, "the service ended"
                    return False

            wait_until(healthy, within_s=180)
            scraped = client.get(f"http://127.0.0.1:{management}/metrics")
            assert scraped.status_code == 200
            assert "ocr_service_workers_alive 1.0" in scraped.text
            assert client.get(f"http://127.0.0.1:{management}/health").json()["status"] == "ok"
            assert client.get(f"http://127.0.0.1:{public}/metrics").status_code == 404
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        with pytest.raises(httpx.TransportError), httpx.Client(timeout=2) as client:
            client.get(f"http://127.0.0.1:{management}/health")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow  # the workers load kraken's models before the service stops
def test_a_taken_management_port_stops_the_service(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(ROOT),
            "OCR_MODELS_DIR": str(tmp_path / "models"),
            "OCR_TRAINING_DIR": str(tmp_path / "training"),
            "OCR_WORKERS": "1",
            "OCR_MEMORY_LIMIT_MB": "16384",
            "OCR_PORT": str(_free_port()),
            "OCR_MANAGEMENT_PORT": str(taken.getsockname()[1]),
        }
        result = subprocess.run(
            [sys.executable, "-m", "ocr_service"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
    assert result.returncode == 1
    assert f"management port 127.0.0.1:{env['OCR_MANAGEMENT_PORT']} could not be served" in result.stderr


def test_the_management_port_must_differ_from_the_public_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="OCR_MANAGEMENT_PORT must differ from OCR_PORT"):
        make_settings(tmp_path, port=9200, management_port=9200)


# --- units ------------------------------------------------------------------------------------


def test_a_worker_counts_the_models_it_had_to_load(tmp_path: Path) -> None:
    refs = []
    for name in ("a", "b"):
        (tmp_path / f"{name}.safetensors").write_bytes(name.encode())
        refs.append(ModelRef.of_file(name, tmp_path / f"{name}.safetensors"))
    cache: ModelCache[str] = ModelCache(lambda ref: ref.name, size=1)
    for ref, loads in ((refs[0], 1), (refs[0], 1), (refs[1], 2), (refs[0], 3)):
        assert cache.get(ref) == ref.name
        assert cache.loads == loads
    cache.put(refs[1], "b")
    assert cache.loads == 3  # given, not loaded


def test_a_page_counts_its_stages_and_loads_and_a_failed_load_counts_too() -> None:
    metrics = ServiceMetrics()
    page = PageResult(
        width=1, height=1, lines=[], seconds=3.0, segmentation_seconds=2.0, recognition_seconds=0.5, models_loaded=2
    )
    metrics.page_read(page)
    metrics.page_failed("UNKNOWN_MODEL", model_failed=True)
    metrics.page_failed("PAGE_TIMEOUT")
    samples = {
        (s.name, frozenset(s.labels.items())): s.value for family in metrics.registry.collect() for s in family.samples
    }
    assert value(samples, "ocr_service_page_seconds_sum", stage="segmentation") == 2.0
    assert value(samples, "ocr_service_page_seconds_sum", stage="recognition") == 0.5
    assert value(samples, "ocr_service_page_seconds_sum", stage="page") == 3.0
    assert value(samples, "ocr_service_model_loads_total", outcome="loaded") == 2
    assert value(samples, "ocr_service_model_loads_total", outcome="failed") == 1
    assert value(samples, "ocr_service_pages_total", outcome="UNKNOWN_MODEL") == 1
    assert value(samples, "ocr_service_pages_total", outcome="PAGE_TIMEOUT") == 1
    assert value(samples, "ocr_service_pages_total", outcome="read") == 1
