"""The whole first day of an archive, in the real browser, against a backend of its own and the real OCR service:
first-start setup → login → upload a 2-page PDF by drag and drop → OCR with the progress bar moving → correct a line
with the keyboard only → reload and see it kept → search finds it → export PAGE XML and the searchable PDF → log out.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.learning_loop import PAGE_WIDTH, make_letter
from tests.support.processes import Backend, Processes, backend_env, wait_for
from tests.web.support import LiveSystem, check_accessibility, screenshot
from tests.web.test_documents import drop_files

ADMIN, PASSWORD = "margarete", "erste-archivarin-1"
WORD = "Zebrafinkenfeder"
TITLE = "Brief an Onkel Wilhelm"
# Records every value the OCR panel's progress bar takes, as it happens (no polling to miss one).
WATCH_PROGRESS = """() => {
  window.__progress = [];
  const bar = document.getElementById("ocr-progress-bar");
  const record = () => window.__progress.push(Number(bar.value) / Number(bar.max || 1));
  new MutationObserver(record).observe(bar, { attributes: true, attributeFilter: ["value", "max"] });
}"""


@pytest.fixture
def fresh_backend(tmp_path: Path, live: LiveSystem) -> Iterator[Backend]:
    """A backend with an empty database and no admin, reading with the session's OCR service."""
    processes = Processes(tmp_path)
    env = backend_env(tmp_path, f"sqlite:///{tmp_path / 'first-day.db'}", live.ocr_url)
    del env["APP_ADMIN_USERNAME"], env["APP_ADMIN_PASSWORD"]
    try:
        yield Backend(processes, env).start()
    finally:
        processes.kill_all()


def tab_to(page: Page, target: str, limit: int = 80) -> None:
    """Press Tab until the element ``target`` (a CSS selector) has the focus: keyboard only."""
    for _ in range(limit):
        if page.evaluate("(selector) => document.activeElement?.matches(selector) ?? false", target):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {target}")


def test_the_first_day_of_an_archive(browser: Browser, fresh_backend: Backend, tmp_path: Path) -> None:
    link = wait_for(
        lambda: re.search(r"http://\S+/setup#token=\S+", fresh_backend.process.log.read_text()), "the setup link"
    ).group(0)
    context = browser.new_context(
        base_url=fresh_backend.url, viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    context.set_default_timeout(30_000)
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    try:
        # First start: the link printed at start-up makes the first admin, then the login page.
        page.goto(link)
        page.get_by_label("Benutzername").fill(ADMIN)
        page.get_by_label("Passwort (mindestens 10 Zeichen)").fill(PASSWORD)
        page.get_by_label("Passwort wiederholen").fill(PASSWORD)
        page.get_by_role("button", name="Konto anlegen").click()
        page.wait_for_url(re.compile(r"/login$"))
        page.get_by_label("Benutzername").fill(ADMIN)
        page.get_by_label("Passwort").fill(PASSWORD)
        page.get_by_role("button", name="Anmelden").click()
        page.wait_for_url(re.compile(r"/documents$"))

        # A 2-page letter dropped onto the upload zone.
        letter = make_letter(seed=4242, pages=2, lines_per_page=5, min_height=4 * PAGE_WIDTH)
        drop_files(page, [(f"{TITLE}.pdf", letter.pdf, "application/pdf")])
        expect(page.get_by_role("textbox", name="Titel", exact=True)).to_have_value(TITLE)
        page.get_by_role("button", name="Hochladen", exact=True).click()
        document_link = page.get_by_role("link", name=TITLE, exact=True)
        expect(document_link).to_be_visible()
        document_link.click()
        page.wait_for_url(re.compile(r"/documents/\d+"))
        document_id = int(re.search(r"/documents/(\d+)", page.url).group(1))  # type: ignore[union-attr]
        expect(page.locator("html")).to_have_attribute("data-viewer-ready", "true")

        # OCR, the progress bar moving page by page to the end.
        page.evaluate(WATCH_PROGRESS)
        page.get_by_role("button", name="Texterkennung starten").click()
        expect(page.locator("#ocr-progress")).to_be_visible()
        screenshot(page, "journey-ocr-running-desktop")
        wait_for(lambda: page.locator("#ocr-last").is_visible(), "the OCR ends", guard_s=600, poll_s=0.5)
        seen = page.evaluate("window.__progress")
        assert any(0 < value < 1 for value in seen), f"the bar never stood between start and end: {seen}"
        assert max(seen) == 1, seen
        first_line = page.get_by_role("textbox", name="Zeile 1", exact=True)
        expect(first_line).to_be_visible()

        # A correction by keyboard alone, saved without a reload, and still there after one.
        tab_to(page, "#lines li[data-number='1'] textarea")
        page.keyboard.press("Control+A")
        page.keyboard.type(f"Liebe {WORD} grüßt")
        page.keyboard.press("Enter")
        expect(page.get_by_text("Gespeichert").first).to_be_visible()
        page.reload()
        expect(page.locator("html")).to_have_attribute("data-viewer-ready", "true")
        expect(page.get_by_role("textbox", name="Zeile 1", exact=True)).to_have_value(f"Liebe {WORD} grüßt")
        check_accessibility(page, "the document view after OCR and a correction")

        # The search box on every page finds the corrected word; the hit opens the document at that line.
        box = page.get_by_role("searchbox", name="Im Archiv suchen")
        box.fill(WORD.lower())
        box.press("Enter")
        page.wait_for_url(re.compile(r"/search\?q="))
        hit = page.locator("a.search-hit").first
        expect(hit).to_contain_text(WORD)
        hit.click()
        page.wait_for_url(re.compile(rf"/documents/{document_id}\?page=1&line=\d+"))
        expect(page.get_by_role("textbox", name="Zeile 1", exact=True)).to_have_value(f"Liebe {WORD} grüßt")

        # Export: PAGE XML (a ZIP with the correction) and the searchable PDF (its text layer has it).
        page.get_by_text("Exportieren").click()
        with page.expect_download() as page_xml:
            page.get_by_role("link", name="PAGE-XML (.zip)").click()
        with zipfile.ZipFile(io.BytesIO(Path(page_xml.value.path()).read_bytes())) as archive:
            xml = b"".join(archive.read(name) for name in archive.namelist() if name.endswith(".xml"))
        assert WORD.encode() in xml
        if not page.locator("#export-menu[open]").count():
            page.get_by_text("Exportieren").click()
        with page.expect_download() as searchable:
            page.get_by_role("link", name="Durchsuchbares PDF").click()
        pdf = pdfium.PdfDocument(Path(searchable.value.path()).read_bytes())
        try:
            assert len(pdf) == 2
            assert WORD in pdf[0].get_textpage().get_text_range()
        finally:
            pdf.close()

        # Logging out ends the session: the documents page asks for a login again.
        page.get_by_role("button", name="Abmelden").click()
        page.wait_for_url(re.compile(r"/login$"))
        page.goto("/documents")
        page.wait_for_url(re.compile(r"/login\?next=/documents$"))
        assert not script_errors, script_errors
    finally:
        context.close()
