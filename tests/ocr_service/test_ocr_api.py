"""The read path over real HTTP with real kraken: /health, /ocr, /ocr/stream and every bad input."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.conftest import make_settings
from tests.support.servers import FileServer, RunningApp, send_bytes, start_file_server
from tests.support.synthetic import edit_distance, page_texts, render_page, to_pdf, to_png, to_tiff


def cer(predicted: str, truth: str) -> float:
    """Character error rate: edit distance over the truth's length."""
    return edit_distance(predicted, truth) / max(1, len(truth))


def read_rows(lines: list[dict]) -> list[str]:  # type: ignore[type-arg]
    """The page's text row by row: blla may cut one printed line into pieces at a wide gap."""
    rows: list[list[dict]] = []  # type: ignore[type-arg]
    for line in sorted(lines, key=lambda ln: (ln["baseline"][0][1], ln["baseline"][0][0])):
        y = line["baseline"][0][1]
        if rows and abs(rows[-1][0]["baseline"][0][1] - y) < 15:
            rows[-1].append(line)
        else:
            rows.append([line])
    return [" ".join(ln["text"] for ln in sorted(row, key=lambda ln: ln["baseline"][0][0])) for row in rows]


def page_cer(rows: list[str], truths: list[str]) -> float:
    """Edit distance of the whole page over its length (the tiny test model may drop a letter)."""
    assert len(rows) == len(truths), (rows, truths)
    errors = sum(cer(r, t) * len(t) for r, t in zip(rows, truths, strict=True))
    return errors / sum(len(t) for t in truths)


# A model that reads the wrong line type, or no model, is near 1.0; the tiny model is below 0.1
# on its own kind of text, up to about 0.2 where blla cuts a printed line into pieces.
READABLE = 0.25


# Pages stand tall: blla scales every page to 1800 px height, so its cost grows with the width it
# scales to (450 px for 800x3200; 2400 px for 800x600, where a page took 19.5 s instead of 3.7 s
# on the 2-core build machine, and the tall page reads as well).
LETTER_SIZE = (800, 3200)


def letter(seed: int, lines: int = 3, words: int = 5, size: tuple[int, int] = LETTER_SIZE):  # type: ignore[no-untyped-def]
    return render_page(page_texts(seed, lines, words), width=size[0], height=size[1], font_size=36)


def stream_events(response: httpx.Response) -> Iterator[dict]:  # type: ignore[type-arg]
    for raw in response.iter_lines():
        if raw.strip():
            yield json.loads(raw)


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    page = letter(11, lines=2)
    running = start_file_server({"/letter.png": send_bytes(to_png(page.image), "image/png")})
    yield running
    running.stop()


# --- health -------------------------------------------------------------------------------


def test_health_reports_the_loaded_models(shared_service: RunningApp) -> None:
    with shared_service.client() as client:
        body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["workers"] == 2
    assert body["segmentationModel"] == "blla"
    assert "tiny" in body["models"]


def test_health_is_503_until_the_models_are_loaded(service_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    running = service_factory(make_settings(tmp_path, workers=1), wait_healthy=False)
    with running.client() as client:
        first = client.get("/health")
        assert first.status_code == 503
        assert first.json()["status"] == "starting"
        ocr = client.post("/ocr", files={"file": ("a.png", to_png(letter(1).image))})
        assert ocr.status_code == 503
        assert ocr.json()["code"] == "MODELS_NOT_READY"


# --- reading ------------------------------------------------------------------------------


def test_ocr_reads_an_uploaded_page_with_the_named_model(shared_service: RunningApp) -> None:
    page = letter(3)
    with shared_service.client() as client:
        response = client.post("/ocr", files={"file": ("scan", to_png(page.image))}, data={"model": "tiny"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "tiny"
    assert "notice" not in body
    [result] = body["pages"]
    assert (result["page"], result["width"], result["height"]) == (1, *LETTER_SIZE)
    lines = result["lines"]
    assert page_cer(read_rows(lines), [t.text for t in page.lines]) < READABLE
    truth_baselines = [t.baseline[0][1] for t in page.lines]
    for line in lines:
        assert 0.0 <= line["confidence"] <= 1.0
        x0, y0, x1, y1 = line["bbox"]
        assert x0 < x1 and y0 < y1
        assert any(y0 - 5 <= base_y <= y1 + 5 for base_y in truth_baselines)
        assert len(line["baseline"]) >= 2 and len(line["polygon"]) >= 3
    assert [line["index"] for line in lines] == list(range(len(lines)))


def test_ocr_fetches_a_document_url_and_reads_without_a_model(shared_service: RunningApp, files: FileServer) -> None:
    with shared_service.client() as client:
        response = client.post("/ocr", json={"documentUrl": f"{files.url}/letter.png"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert files.hits == ["/letter.png"]
    assert body["model"] is None
    assert "No recognition model" in body["notice"]
    [page] = body["pages"]
    assert len(read_rows(page["lines"])) == 2
    assert all(line["text"] == "" for line in page["lines"])


def test_stream_sends_pages_and_lines_in_order_and_the_first_line_before_the_document_is_done(
    shared_service: RunningApp,
) -> None:
    pages = [letter(21, 2), letter(22, 2), letter(23, 2)]
    events: list[dict] = []  # type: ignore[type-arg]
    still_working_at_first_line = None
    with (
        shared_service.client() as client,
        client.stream(
            "POST",
            "/ocr/stream",
            files={"file": ("doc.pdf", to_pdf([p.image for p in pages], dpi=150))},
            data={"model": "tiny"},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        for event in stream_events(response):
            events.append(event)
            if event["type"] == "line" and still_working_at_first_line is None:
                # The document is still being read when its first line arrives.
                with shared_service.client() as probe:
                    still_working_at_first_line = probe.get("/health").json()["queue"]["active"] == 1
    assert still_working_at_first_line is True
    kinds = [e["type"] for e in events]
    assert kinds[0] == "page" and kinds[-1] == "done" and "error" not in kinds
    assert [e["page"] for e in events if e["type"] == "page"] == [1, 2, 3]
    assert events[0]["pages"] == 3
    # Every page names the models that read it, before its lines: the backend stores them page by page.
    models = {"model": "tiny", "modelVersion": 1, "segmentationModel": "blla", "segmentationModelVersion": 1}
    assert all(e.items() >= models.items() for e in events if e["type"] == "page")
    current = 0
    for event in events[:-1]:
        if event["type"] == "page":
            current = event["page"]
        else:
            assert event["page"] == current  # every line follows its own page's event
    lines = [e for e in events if e["type"] == "line"]
    assert events[-1] == {
        "type": "done",
        "pages": 3,
        "lines": len(lines),
        "model": "tiny",
        "modelVersion": 1,
        "segmentationModel": "blla",
        "segmentationModelVersion": 1,
    }
    for number, page in enumerate(pages, 1):
        rows = read_rows([e for e in lines if e["page"] == number])
        assert page_cer(rows, [t.text for t in page.lines]) < READABLE


def test_a_failure_mid_stream_ends_with_one_error_event(shared_service: RunningApp) -> None:
    page = letter(31, 2).image
    data = bytearray(to_tiff([page, page.rotate(180)]))
    second = Image.open(io.BytesIO(bytes(data)))
    second.seek(1)
    offset, size = second.tag_v2[273][0], second.tag_v2[279][0]
    data[offset : offset + size] = b"\xff" * size  # page 2's pixels no longer decode
    with (
        shared_service.client() as client,
        client.stream(
            "POST", "/ocr/stream", files={"file": ("doc.tif", bytes(data))}, data={"model": "tiny"}
        ) as response,
    ):
        assert response.status_code == 200
        events = list(stream_events(response))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "page" and kinds[-1] == "error"
    assert kinds.count("error") == 1 and "done" not in kinds
    assert events[-1]["code"] == "CORRUPT_DOCUMENT"
    assert "Page 2" in events[-1]["message"]


# --- bad input: a clear 4xx with a code, before any work ---------------------------------


@pytest.mark.parametrize(
    ("files_", "data", "status", "code"),
    [
        ({"file": ("letter.pdf", b"just some text, not a scan")}, {}, 415, "UNSUPPORTED_DOCUMENT_TYPE"),
        ({"file": ("letter.png", b"")}, {}, 422, "EMPTY_DOCUMENT"),
        ({"file": ("letter.png", to_png(Image.new("L", (200, 100)))[:60])}, {}, 422, "CORRUPT_DOCUMENT"),
        ({"file": ("big.png", to_png(Image.new("1", (4000, 4000), 1)))}, {}, 413, "PAGE_TOO_LARGE"),
        ({"file": ("long.pdf", to_pdf([Image.new("L", (50, 50), 255)] * 6))}, {}, 413, "TOO_MANY_PAGES"),
        ({"file": ("a.png", to_png(Image.new("L", (50, 50), 255)))}, {"model": "nope"}, 422, "UNKNOWN_MODEL"),
        ({"file": ("a.png", to_png(Image.new("L", (50, 50), 255)))}, {"model": "../tiny"}, 422, "UNKNOWN_MODEL"),
        ({"file": ("a.png", to_png(Image.new("L", (50, 50), 255)))}, {"model": "blla"}, 422, "WRONG_MODEL_KIND"),
        ({"document": ("a.png", b"\x89PNG")}, {}, 422, "INVALID_REQUEST"),
    ],
    ids=[
        "not-a-document",
        "empty",
        "corrupt",
        "pixel-bomb",
        "too-many-pages",
        "unknown-model",
        "model-path-trick",
        "segmentation-model",
        "wrong-field",
    ],
)
@pytest.mark.parametrize("path", ["/ocr", "/ocr/stream"])
def test_bad_uploads_get_a_clear_error(shared_service: RunningApp, path: str, files_, data, status, code) -> None:  # type: ignore[no-untyped-def]
    with shared_service.client() as client:
        response = client.post(path, files=files_, data=data)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert body["message"]


def test_an_oversized_upload_is_refused(shared_service: RunningApp) -> None:
    blob = b"%PDF-" + os.urandom(6 * 1024 * 1024)
    with shared_service.client() as client:
        response = client.post("/ocr", files={"file": ("huge.pdf", blob)})
    assert response.status_code == 413
    assert response.json()["code"] == "DOCUMENT_TOO_LARGE"


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b'{"documentUrl": ', {"content-type": "application/json"}, 400, "MALFORMED_JSON"),
        (b'{"url": "http://x"}', {"content-type": "application/json"}, 422, "INVALID_REQUEST"),
        (b'["http://x"]', {"content-type": "application/json"}, 422, "INVALID_REQUEST"),
        (b"documentUrl=http://x", {"content-type": "application/x-www-form-urlencoded"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
    ],
)
def test_malformed_requests_get_a_clear_error(shared_service: RunningApp, content, headers, status, code) -> None:  # type: ignore[no-untyped-def]
    with shared_service.client() as client:
        response = client.post("/ocr", content=content, headers=headers)
    assert response.status_code == status
    assert response.json()["code"] == code


def test_a_url_on_a_host_not_allowed_is_refused_and_nothing_fetched(
    shared_service: RunningApp, files: FileServer
) -> None:
    before = list(files.hits)
    with shared_service.client() as client:
        response = client.post("/ocr/stream", json={"documentUrl": f"http://localhost:{files.port}/letter.png"})
    assert response.status_code == 400
    assert response.json()["code"] == "URL_NOT_ALLOWED"
    assert files.hits == before


def test_unknown_paths_and_methods_use_the_error_body(shared_service: RunningApp) -> None:
    with shared_service.client() as client:
        missing = client.get("/nothing")
        wrong = client.get("/ocr")
    assert (missing.status_code, missing.json()["code"]) == (404, "NOT_FOUND")
    assert (wrong.status_code, wrong.json()["code"]) == (405, "METHOD_NOT_ALLOWED")


def test_every_response_carries_a_request_id(shared_service: RunningApp) -> None:
    with shared_service.client() as client:
        given = client.get("/health", headers={"X-Request-ID": "backend-42"})
        made = client.get("/health", headers={"X-Request-ID": "no spaces allowed"})
    assert given.headers["x-request-id"] == "backend-42"
    assert made.headers["x-request-id"] not in ("", "no spaces allowed")
