"""Browser tests: Debian's Chromium driven by Playwright, against the real backend and OCR service on loopback.

One live system (the OCR service with the tiny baselines model and training on, the backend on
SQLite) serves every browser test of the session: tests make their own documents and never
assume an empty archive. A test that needs an archive before its first admin starts its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from tests.support.learning_loop import TOKEN
from tests.support.models import tiny_baseline_model
from tests.support.processes import ADMIN, PASSWORD, Backend, OcrService, Processes, backend_env
from tests.web.support import ARCHIVIST, ARCHIVIST_PASSWORD, CHROMIUM, CHROMIUM_ARGS, Browsing, LiveSystem


@pytest.fixture(scope="session")
def live_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    processes = Processes(tmp_path_factory.mktemp("web-live"))
    yield processes
    processes.kill_all()


@pytest.fixture(scope="session")
def live(live_processes: Processes) -> LiveSystem:
    """The OCR service (tiny baselines model "hand-a" as default, training on) and the backend."""
    tmp = live_processes.tmp
    ocr = OcrService(live_processes, tmp / "ocr", tiny_baseline_model(), model_name="hand-a")
    ocr.start_process(OCR_TRAINING_TOKEN=TOKEN, OCR_WORKERS="1", OCR_TRAINING_THREADS="2")
    env = backend_env(
        tmp,
        f"sqlite:///{tmp / 'backend.db'}",
        ocr.url,
        APP_OCR_TRAINING_TOKEN=TOKEN,
        APP_OCR_TRAINING_URL=ocr.url,
        APP_TRAINING_POLL_S="0.5",
    )
    backend = Backend(live_processes, env).start()
    system = LiveSystem(backend.url, (ADMIN, PASSWORD), (ARCHIVIST, ARCHIVIST_PASSWORD), ocr.url)
    with system.api() as client:
        made = client.post(
            "/api/users", json={"username": ARCHIVIST, "password": ARCHIVIST_PASSWORD, "role": "archivist"}
        )
        assert made.status_code == 201, made.text
    return system


# One driver and browser per module, not per session: Playwright's sync API keeps an asyncio
# loop running in the main thread while it is open, and `make test` runs files in two processes
# (pytest-xdist), so a browser module may be followed in the same process by tests that call
# asyncio.run() themselves ("cannot be called from a running event loop").
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        # Never skipped: a missing browser is a failure that says how to get it.
        pytest.fail(
            f"The browser tests need Debian's Chromium at {CHROMIUM}: run `make test` (it installs it) "
            "or `apt-get install -y chromium`."
        )
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def browsing(browser: Browser, live: LiveSystem) -> Browsing:
    return Browsing(browser, live)
