"""The document view's OCR panel and export menu, in the real browser against the live system:
OCR started from the page with a bar that moves page by page (Server-Sent Events), a reload in
the middle of a run, cancelling, the OCR service unavailable, and the exports downloaded."""

from __future__ import annotations

import io
import itertools
import random
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.support.processes import ADMIN, DPI, PASSWORD, Backend, Processes, backend_env, free_port, wait_for
from tests.support.synthetic import HAND_A, render_page, sentence, to_pdf
from tests.web.support import (
    LANGUAGES,
    WIDTHS,
    Browsing,
    LiveSystem,
    audit_page,
    check_accessibility,
    screenshot,
)

SEEDS = itertools.count(16_200)
UNAVAILABLE_DE = "Der OCR-Dienst ist gerade nicht verfügbar. Bitte warte einen Moment und versuche es erneut."
ENDED = {"DONE", "FAILED", "CANCELLED"}

# Watches the panel from inside the page: every (bar value, bar max, text) it shows, and each
# "ocr:finished" event the panel dispatches for the viewer.
WATCH = """() => {
  window.ocrSeen = []; window.ocrFinished = [];
  const bar = document.getElementById("ocr-progress-bar");
  const text = document.getElementById("ocr-progress-text");
  const progress = document.getElementById("ocr-progress");
  const look = () => { if (!progress.hidden) window.ocrSeen.push([bar.value, bar.max, text.textContent]); };
  new MutationObserver(look).observe(document.getElementById("ocr-panel"),
    {attributes: true, subtree: true, childList: true, characterData: true});
  document.addEventListener("ocr:finished", (event) => window.ocrFinished.push(event.detail.documentId));
}"""


def _letter(seed: int, pages: int) -> bytes:
    """Tall narrow pages of three short lines in hand A (the tiny model reads it): kraken
    segments a page at 1800 px high, so the narrower the page, the cheaper it is to read on the
    build machine's two shared cores."""
    rng = random.Random(seed)
    drawn = [
        render_page(
            [sentence(rng, 2) for _ in range(3)],
            width=340,
            height=900,
            font_size=26,
            margin=30,
            line_gap=2.4,
            font_file=HAND_A,
        ).image
        for _ in range(pages)
    ]
    return to_pdf(drawn, dpi=DPI)


def _upload(client: httpx.Client, pages: int) -> int:
    seed = next(SEEDS)
    response = client.post(
        "/api/documents",
        files={"file": (f"ocr-panel-{seed}.pdf", _letter(seed, pages), "application/pdf")},
        data={"title": f"OCR-Panel {seed}", "writer": "Anna Panel"},
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _job(client: httpx.Client, document_id: int) -> dict[str, Any] | None:
    response = client.get(f"/api/documents/{document_id}/ocr-job")
    assert response.status_code == 200, response.text
    job: dict[str, Any] | None = response.json()["job"]
    return job


def _wait_ended(client: httpx.Client, document_id: int) -> dict[str, Any]:
    found: dict[str, Any] = wait_for(
        lambda: (job := _job(client, document_id)) is not None and job["status"] in ENDED and job,
        f"the OCR job of document {document_id} ends",
        poll_s=0.5,
    )
    return found


@pytest.fixture(scope="module")
def read_document(live: LiveSystem) -> int:
    """A 2-page letter read by OCR through the API (the exports and the page checks use it)."""
    with live.api() as client:
        document_id = _upload(client, pages=2)
        started = client.post(f"/api/documents/{document_id}/ocr", json={})
        assert started.status_code == 202, started.text
        assert _wait_ended(client, document_id)["status"] == "DONE"
    return document_id


def _start_from_the_page(page: Page) -> None:
    page.get_by_role("button", name="Texterkennung starten").click()
    expect(page.get_by_role("button", name="Texterkennung abbrechen")).to_be_focused()


def test_ocr_started_from_the_page_moves_its_bar_page_by_page(browsing: Browsing) -> None:
    with browsing.live.api("archivist") as client:
        document_id = _upload(client, pages=2)
    with browsing.page("archivist") as page:
        page.goto(f"/documents/{document_id}")
        # The writer has no model of their own: the default ("hand-a") is offered first.
        expect(page.get_by_label("Modell")).to_have_value("hand-a")
        page.evaluate(WATCH)
        _start_from_the_page(page)
        notice = page.locator("#notices .notice--success")
        expect(notice).to_have_text(re.compile("Texterkennung fertig. Gelesene Seiten: 2 von 2."), timeout=300_000)
        seen = page.evaluate("window.ocrSeen")
        assert page.evaluate("window.ocrFinished") == [document_id]
    # More than one value before the end: the bar moved page by page, not only at the end.
    before_end = {value for value, _, _ in seen if value < 2}
    assert {0, 1} <= before_end, seen
    assert all(maximum == 2 for _, maximum, _ in seen), seen
    texts = [text for _, _, text in seen]
    assert any(text.startswith("Seite 1 von 2 gelesen") for text in texts), texts
    values = [value for value, _, _ in seen]
    assert values == sorted(values), "the bar never goes back"
    with browsing.live.api() as client:
        job = _job(client, document_id)
        assert job is not None and (job["status"], job["pagesDone"]) == ("DONE", 2)
        assert job["modelRequested"] is None  # the preselected model: the job decided, as the server would


def test_a_reload_in_the_middle_of_a_run_shows_the_progress_going_on(browsing: Browsing) -> None:
    with browsing.live.api("archivist") as client:
        document_id = _upload(client, pages=3)
    with browsing.page("archivist", width="tablet") as page:
        page.goto(f"/documents/{document_id}")
        _start_from_the_page(page)
        text = page.locator("#ocr-progress-text")
        expect(text).to_contain_text("Seite 1 von 3 gelesen", timeout=300_000)
        screenshot(page, "document-ocr-running-tablet")
        check_accessibility(page, "document OCR panel during a run")
        page.reload()
        page.evaluate(WATCH)
        # The page found its document's job: the progress, not the start button.
        expect(page.locator("#ocr-progress")).to_be_visible()
        expect(page.get_by_role("button", name="Texterkennung starten")).to_be_hidden()
        expect(text).to_contain_text(re.compile(r"Seite [1-3] von 3 gelesen"))
        expect(page.locator("#notices .notice--success")).to_contain_text("Gelesene Seiten: 3 von 3", timeout=300_000)
        seen = page.evaluate("window.ocrSeen")
        assert max(value for value, _, _ in seen) == 3
        assert page.evaluate("window.ocrFinished") == [document_id]
        expect(page.get_by_role("button", name="Texterkennung starten")).to_be_visible()
        expect(page.locator("#ocr-last")).to_have_text("Letzte Texterkennung: fertig, gelesene Seiten: 3 von 3.")


def test_a_run_cancelled_from_the_page_keeps_the_pages_read(browsing: Browsing) -> None:
    with browsing.live.api("archivist") as client:
        document_id = _upload(client, pages=3)
    with browsing.page("archivist") as page:
        page.goto(f"/documents/{document_id}")
        _start_from_the_page(page)
        expect(page.locator("#ocr-progress-text")).to_contain_text("Seite 1 von 3 gelesen", timeout=300_000)
        page.keyboard.press("Enter")  # the cancel button has the focus
        notice = page.locator("#notices .notice--info")
        expect(notice).to_contain_text("Texterkennung abgebrochen.")
        expect(page.get_by_role("button", name="Texterkennung starten")).to_be_focused()
        said = notice.inner_text()
    with browsing.live.api() as client:
        job = _job(client, document_id)
        assert job is not None and job["status"] == "CANCELLED"
        assert 1 <= job["pagesDone"] < 3
        assert f"Die bisher gelesenen Seiten bleiben erhalten: {job['pagesDone']} von 3." in said
        # A page being stored as the cancel came may still land; nothing past it is read.
        pages = {line["page"] for line in client.get(f"/api/documents/{document_id}/lines").json()}
        assert pages <= set(range(1, job["pagesDone"] + 1)) and 1 in pages


def test_the_corrections_may_be_discarded_only_with_a_warning(browsing: Browsing, read_document: int) -> None:
    with browsing.live.api() as client:
        line = client.get(f"/api/documents/{read_document}/lines").json()[0]
        if line["text"] is None:
            saved = client.patch(f"/api/lines/{line['id']}", json={"text": "Liebe Mutter", "version": line["version"]})
            assert saved.status_code == 200, saved.text
        corrected = client.get(f"/api/documents/{read_document}/ocr-job").json()["correctedLines"]
    assert corrected >= 1
    with browsing.page("admin") as page:
        page.goto(f"/documents/{read_document}")
        box = page.get_by_label("Korrekturen verwerfen")
        expect(box).not_to_be_checked()
        expect(page.locator("#ocr-discard-warning")).to_contain_text(
            f"Korrigierte Zeilen in diesem Dokument: {corrected}."
        )
        expect(box).to_have_attribute("aria-describedby", "ocr-discard-warning")
    # An archivist who did not upload it is not offered what the server would refuse.
    with browsing.page("archivist") as page:
        page.goto(f"/documents/{read_document}")
        expect(page.locator("#ocr-last")).to_be_visible()
        expect(page.get_by_label("Korrekturen verwerfen")).to_be_hidden()


def test_the_exports_download_from_the_menu_by_keyboard(browsing: Browsing, read_document: int) -> None:
    with browsing.page("archivist") as page:
        page.goto(f"/documents/{read_document}")
        summary = page.locator("#export-menu summary")
        summary.focus()
        page.keyboard.press("Enter")
        links = page.locator("#export-menu a")
        expect(links.first).to_be_focused()
        page.keyboard.press("ArrowDown")
        expect(page.get_by_role("link", name="PAGE-XML (.zip)")).to_be_focused()
        page.keyboard.press("ArrowUp")
        page.keyboard.press("ArrowUp")
        expect(page.get_by_role("link", name="Durchsuchbares PDF")).to_be_focused()
        page.keyboard.press("Escape")
        expect(summary).to_be_focused()
        expect(page.locator("#export-menu")).not_to_have_attribute("open", "")

        xml = _download(page, "PAGE-XML (.zip)")
        with zipfile.ZipFile(io.BytesIO(xml)) as archive:
            names = [name for name in archive.namelist() if name.endswith(".xml")]
            assert len(names) >= 2
            for name in names:
                ElementTree.fromstring(archive.read(name))  # each page's XML parses
        assert _download(page, "Durchsuchbares PDF").startswith(b"%PDF")
        alto = _download(page, "ALTO-XML (.zip)")
        assert zipfile.is_zipfile(io.BytesIO(alto))
        assert _download(page, "Text (.txt)").strip()


def _download(page: Page, name: str) -> bytes:
    page.locator("#export-menu summary").click()
    with page.expect_download() as info:
        page.get_by_role("link", name=name).click()
    path = info.value.path()
    assert path is not None
    return Path(path).read_bytes()


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_panel_and_menu_are_accessible_in_every_language_and_width(
    browsing: Browsing, read_document: int, language: str, width: str
) -> None:
    with browsing.page("admin", language, width) as page:
        page.goto(f"/documents/{read_document}")
        expect(page.locator("#ocr-last")).to_be_visible()  # the panel's script has read the job
        page.locator("#export-menu summary").click()
        expect(page.locator("#export-menu a").first).to_be_visible()
        audit_page(page, "document OCR panel", "document-ocr", language, width)


@pytest.fixture(scope="module")
def dead_ocr_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """A backend of this module's own whose OCR service does not answer (nothing listens there)."""
    tmp = tmp_path_factory.mktemp("dead-ocr")
    processes = Processes(tmp)
    try:
        yield Backend(
            processes, backend_env(tmp, f"sqlite:///{tmp / 'dead.db'}", f"http://127.0.0.1:{free_port()}")
        ).start()
    finally:
        processes.kill_all()


def _logged_in(browsing: Browsing, backend: Backend) -> BrowserContext:
    context = browsing.browser.new_context(base_url=backend.url, viewport={"width": 1280, "height": 900})
    login = context.request.post("/api/auth/login", data={"username": ADMIN, "password": PASSWORD})
    assert login.ok, login.text()
    context.add_cookies([{"name": "archiv_lang", "value": "de", "url": backend.url}])
    return context


def test_the_ocr_service_unavailable_is_said_calmly_and_stays(browsing: Browsing, dead_ocr_backend: Backend) -> None:
    with dead_ocr_backend.client() as client:
        document_id = _upload(client, pages=1)
    context = _logged_in(browsing, dead_ocr_backend)
    try:
        page = context.new_page()
        page.goto(f"/documents/{document_id}")
        notice = page.locator("#notices .notice--error")
        expect(notice.first).to_have_text(re.compile(re.escape(UNAVAILABLE_DE)), timeout=60_000)
        expect(page.locator("#notices")).to_have_attribute("aria-live", "polite")
        page.wait_for_timeout(1500)  # not dismissed on its own
        expect(notice.first).to_be_visible()
        # OCR can still be started with the automatic choice once the service is back.
        expect(page.get_by_label("Modell")).to_have_value("")
        expect(page.get_by_role("button", name="Texterkennung starten")).to_be_enabled()
        check_accessibility(page, "document OCR panel, OCR service unavailable")
    finally:
        context.close()
