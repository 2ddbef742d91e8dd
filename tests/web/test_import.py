"""The import page in the real browser: a generated Transkribus PAGE ZIP of two documents is
uploaded with its progress, and what was imported is listed (documents, pages, lines, links); a
refused ZIP shows the catalog's message and keeps what was typed."""

from __future__ import annotations

import re
import secrets

import pytest
from playwright.sync_api import FilePayload, expect

from tests.backend.transcript_files import gen_page, transkribus_page, zip_of
from tests.web.support import (
    LANGUAGES,
    WIDTHS,
    Browsing,
    LiveSystem,
    audit_page,
    screenshot,
)
from tests.web.test_search import transkribus_documents, unique_word


def zip_file(name: str, data: bytes) -> FilePayload:
    return FilePayload(name=name, mimeType="application/zip", buffer=data)


def test_a_transkribus_zip_is_imported_and_what_came_in_is_listed(browsing: Browsing, live: LiveSystem) -> None:
    word = unique_word("import")
    documents = {
        f"Brief an Anna {word}": [["Liebe Anna", "es schneit", "dein Karl"], ["Nachsatz", "Grüße"]],
        f"Brief an Karl {word}": [["Lieber Karl", f"{word} kam an", "viele Grüße", "Anna"]],
    }
    data = transkribus_documents(documents)
    with browsing.page("archivist", "de") as page:
        page.goto("/search")  # any page: the import is one click from the main menu
        page.get_by_role("navigation", name="Hauptmenü").get_by_role("link", name="Import").click()
        expect(page).to_have_url(re.compile(r"/import$"))
        page.get_by_label("ZIP-Datei", exact=True).set_input_files(files=zip_file("export.zip", data))
        page.get_by_label("Geschrieben von (freiwillig)").fill("Anna Roth")
        page.get_by_label("Datum (freiwillig)").fill("1916-05")
        # Every progress the page shows, as it shows it (the upload is quick on loopback).
        page.evaluate(
            """() => { window.seen = []; const bar = document.getElementById('import-progress-bar');
            new MutationObserver(() => window.seen.push(bar.getAttribute('value')))
              .observe(bar, {attributes: true, attributeFilter: ['value']}); }"""
        )
        page.get_by_role("button", name="ZIP-Datei importieren").click()
        result = page.get_by_role("region", name="Importiert")
        expect(result).to_be_visible()
        expect(result).to_be_focused()
        expect(result.locator("#import-summary")).to_have_text("Dokumente: 2, Seiten: 3, Zeilen: 9.")
        expect(page.locator("#notices .notice--success")).to_contain_text("Importierte Dokumente: 2")
        anna = result.get_by_role("listitem").filter(has_text=f"Brief an Anna {word}")
        expect(anna).to_contain_text("Seiten: 2 · Zeilen: 5")
        expect(result.get_by_role("listitem").filter(has_text=f"Brief an Karl {word}")).to_contain_text(
            "Seiten: 1 · Zeilen: 4"
        )
        assert "100" in page.evaluate("window.seen"), "the upload's progress never reached 100 %"
        expect(page.locator("#import-progress")).to_be_hidden()
        screenshot(page, "import-done-desktop")
        # The writer and date given went with the documents.
        with live.api() as client:
            found = client.get("/api/search", params={"q": word}).json()["results"]
        karl = next(r["document"] for r in found if r["document"]["title"] == f"Brief an Karl {word}")
        assert karl["writer"]["name"] == "Anna Roth" and karl["date"] == "1916-05-01"
        anna.get_by_role("link").click()
        expect(page).to_have_url(re.compile(r"/documents/\d+$"))
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Brief an Anna {word}")


def test_a_refused_zip_shows_its_message_and_keeps_what_was_typed(browsing: Browsing) -> None:
    page_without_image = gen_page(secrets.randbits(30), "fehlt.png", lines=2)
    missing_image = zip_of({"Brief/page/fehlt.xml": transkribus_page(page_without_image)})
    with browsing.page("archivist", "de", "tablet") as page:
        page.goto("/import")
        page.get_by_role("button", name="ZIP-Datei importieren").click()
        expect(page.locator("#notices .notice--error")).to_have_text(re.compile("Bitte wähle zuerst die ZIP-Datei"))
        page.get_by_label("Titel (freiwillig, nur bei einer ZIP-Datei mit einem Dokument)").fill("Mein Brief")
        page.get_by_label("ZIP-Datei", exact=True).set_input_files(
            files=zip_file("notiz.zip", b"just some text, no zip")
        )
        page.get_by_role("button", name="ZIP-Datei importieren").click()
        expect(page.locator("#notices .notice--error")).to_have_text(re.compile("Das ist keine ZIP-Datei"))
        expect(page.get_by_label("Titel (freiwillig, nur bei einer ZIP-Datei mit einem Dokument)")).to_have_value(
            "Mein Brief"
        )
        page.get_by_label("ZIP-Datei", exact=True).set_input_files(files=zip_file("brief.zip", missing_image))
        page.get_by_role("button", name="ZIP-Datei importieren").click()
        notice = page.locator("#notices .notice--error")
        expect(notice).to_have_text(re.compile("In der ZIP-Datei fehlt ein Bild"))
        page.wait_for_timeout(1000)  # an error is never dismissed on its own
        expect(notice).to_be_visible()
        expect(page.get_by_role("region", name="Importiert")).to_be_hidden()
        screenshot(page, "import-error-tablet")
        page.get_by_label("Datum (freiwillig)").fill("Mai 1916")
        page.get_by_role("button", name="ZIP-Datei importieren").click()
        expect(page.locator("#notices .notice--error")).to_have_text(re.compile("Bitte schreib das Datum wie 1916"))


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_import_page_is_accessible_in_every_language_and_width(
    browsing: Browsing, language: str, width: str
) -> None:
    with browsing.page("archivist", language, width) as page:
        page.goto("/import")
        audit_page(page, "import", "import", language, width)
