"""Shared fixtures: the tiny test model, OCR services on loopback, generated documents."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from ocr_service.app import create_app
from ocr_service.settings import Settings
from tests.support.models import tiny_recognition_model
from tests.support.servers import RunningApp, start_app

# Property tests explore the same seeded examples on every run and every machine: a failure in CI
# is one a developer can reproduce, and a green run is not luck. (Loaded before any test module
# builds its own settings, which start from this profile.)
hypothesis_settings.register_profile("seeded", derandomize=True, database=None)
hypothesis_settings.load_profile("seeded")


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """A recognition model trained on rendered line strips (line type bbox), cached across runs."""
    return tiny_recognition_model("safetensors")


def make_settings(models_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"models_dir": models_dir, "workers": 2, "memory_limit_mb": 16384}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def shared_service(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[RunningApp]:
    """One OCR service for the read-path tests that do not change its store or settings.

    The store holds the tiny model as ``tiny``; URL fetching allows 127.0.0.1 (the tests'
    own file server), which is why private addresses are allowed here.
    """
    models = tmp_path_factory.mktemp("shared-models")
    shutil.copyfile(tiny_model, models / "tiny.safetensors")
    settings = make_settings(
        models,
        allowed_pdf_hosts=["127.0.0.1"],
        allow_private_addresses=True,
        max_pages=5,
        max_page_pixels=4_000_000,
        max_document_bytes=5 * 1024 * 1024,
        pdf_dpi=150,
        fetch_timeout_s=3,
    )
    running = start_app(create_app(settings))
    yield running
    running.stop()


@pytest.fixture
def service_factory() -> Iterator[Callable[..., RunningApp]]:
    """Start an OCR service with settings of the test's own; stopped when the test ends."""
    started: list[RunningApp] = []

    def start(settings: Settings, wait_healthy: bool = True) -> RunningApp:
        running = start_app(create_app(settings), wait_healthy=wait_healthy)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
