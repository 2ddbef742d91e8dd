"""A PDF page that renders for hours, over real HTTP: 422 DOCUMENT_TOO_COMPLEX after the render
limit, the service stays healthy, and the documents sent beside it and after it are read."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from ocr_service.app import create_app
from tests.conftest import make_settings
from tests.ocr_service.test_ocr_api import stream_events
from tests.ocr_service.test_pdf_render import SLOW_PDF, noise_pdf
from tests.support.fake_engine import ENGINE
from tests.support.pdf_builds import nested_forms_pdf
from tests.support.servers import RunningApp, start_app


@pytest.fixture
def service(tmp_path: Path) -> Iterator[RunningApp]:
    settings = make_settings(tmp_path / "models", workers=1, pdf_dpi=100, pdf_render_timeout_s=3)
    running = start_app(create_app(settings, engine=ENGINE))
    yield running
    running.stop()


def test_a_pdf_slow_to_render_is_422_and_the_other_documents_are_read(service: RunningApp) -> None:
    with service.client() as client, ThreadPoolExecutor(max_workers=2) as clients:

        def post(name: str, data: bytes) -> httpx.Response:
            return client.post("/ocr", files={"file": (name, data)})

        slow = clients.submit(post, "plan.pdf", SLOW_PDF)
        beside = clients.submit(post, "letter.pdf", noise_pdf(2))
        assert client.get("/health").status_code == 200
        refused, read = slow.result(), beside.result()
        after = post("next.pdf", noise_pdf(3, (400, 300)))
        health = client.get("/health")

    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "DOCUMENT_TOO_COMPLEX"
    assert refused.json()["message"].startswith("Page 1 of the PDF took longer than 3 s to render")
    assert read.status_code == 200, read.text
    assert [(p["width"], p["height"]) for p in read.json()["pages"]] == [(417, 278)] * 2
    assert after.status_code == 200, after.text
    assert [(p["width"], p["height"]) for p in after.json()["pages"]] == [(556, 417)] * 3
    assert health.status_code == 200


def test_a_page_slow_to_render_mid_stream_ends_it_with_one_error_event(service: RunningApp) -> None:
    with (
        service.client() as client,
        client.stream(
            "POST", "/ocr/stream", files={"file": ("plans.pdf", nested_forms_pdf(9, 10, quick_pages=1))}
        ) as response,
    ):
        assert response.status_code == 200  # page 1 renders: the stream has begun
        events = list(stream_events(response))
        after = client.post("/ocr", files={"file": ("next.pdf", noise_pdf(1))})
    kinds = [e["type"] for e in events]
    assert kinds[0] == "page" and kinds.count("page") == 1 and kinds[-1] == "error" and "done" not in kinds
    assert events[-1]["code"] == "DOCUMENT_TOO_COMPLEX"
    assert events[-1]["message"].startswith("Page 2 of the PDF took longer than 3 s to render")
    assert after.status_code == 200, after.text
