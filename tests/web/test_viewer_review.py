"""The document view's "page reviewed" toggle in the real browser: by keyboard alone, the state in
words on the page and on its thumbnail, unsaved lines saved first (or the review refused while
one cannot be), a refusal in the catalog's words, accessibility in every language and width.

Also the error messages the scripts fetch only when an error is to be shown (not in every page).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, Request, expect

from backend.users.schemas import LANGUAGES as UI_LANGUAGES
from backend.web.error_messages import ERROR_MESSAGES
from backend.web.rendering import Renderer
from tests.web.support import (
    LANGUAGES,
    WIDTHS,
    Browsing,
    LiveSystem,
    audit_page,
    screenshot,
)
from tests.web.test_viewer import field, import_document, open_view

RENDERER = Renderer(Path(__file__).resolve().parents[2] / "frontend")


@pytest.fixture(scope="module")
def admin_api(live: LiveSystem) -> Iterator[httpx.Client]:
    with live.api("admin") as client:
        yield client


@pytest.fixture(scope="module")
def reviewed(admin_api: httpx.Client) -> int:
    """A two-page document whose first page is reviewed (the tests only look at it)."""
    document_id, _ = unreviewed_document(admin_api, "Geprüfter Brief", lines=3, pages=2)
    marked = admin_api.put(f"/api/documents/{document_id}/pages/1/review")
    assert marked.status_code == 200, marked.text
    return document_id


def unreviewed_document(
    client: httpx.Client, title: str, lines: int, pages: int = 1
) -> tuple[int, list[dict[str, Any]]]:
    """An imported document (an import marks its pages reviewed) with every page's review taken back."""
    document_id, found = import_document(client, title, lines=lines, pages=pages)
    for number in range(1, pages + 1):
        taken = client.delete(f"/api/documents/{document_id}/pages/{number}/review")
        assert taken.status_code == 200 and taken.json()["reviewed"] is False, taken.text
    return document_id, found


def page_state(client: httpx.Client, document_id: int, number: int = 1) -> dict[str, Any]:
    pages = client.get(f"/api/documents/{document_id}/pages")
    assert pages.status_code == 200, pages.text
    state: dict[str, Any] = pages.json()[number - 1]
    return state


def toggle(page: Page) -> Any:
    return page.get_by_role("button", name="Seite geprüft")


def test_a_page_is_marked_reviewed_and_back_by_keyboard_with_its_lines_saved_first(
    browsing: Browsing, admin_api: httpx.Client
) -> None:
    document_id, lines = unreviewed_document(admin_api, "Brief zum Prüfen", lines=3, pages=2)
    with browsing.page("archivist") as page:
        open_view(page, document_id)
        button = toggle(page)
        expect(button).to_have_attribute("aria-pressed", "false")
        expect(page.locator("#page-review-state")).to_have_text(re.compile("^Noch nicht geprüft"), use_inner_text=True)
        thumbnails = page.get_by_role("navigation", name="Seiten des Dokuments")
        expect(thumbnails.get_by_role("link", name="Seite 1", exact=True)).to_be_visible()
        # The last line typed and, without a pause, Tab to the toggle and Space: the line goes first.
        last = field(page, 3)
        last.focus()
        page.keyboard.press("End")
        page.keyboard.type(" geprüft")
        page.keyboard.press("Tab")
        expect(button).to_be_focused()
        page.keyboard.press("Space")
        expect(button).to_have_attribute("aria-pressed", "true")
        expect(button).to_be_focused()
        expect(page.locator("#page-review-state")).to_have_text(
            re.compile(r"^Geprüft am \d+\. \w+ \d{4}\."), use_inner_text=True
        )
        expect(page.locator("#save-announcer")).to_have_text("Seite 1 ist als geprüft markiert.")
        expect(thumbnails.get_by_role("link", name="Seite 1 Geprüft")).to_have_attribute("aria-current", "page")
        expect(thumbnails.get_by_role("link", name="Seite 2", exact=True)).to_be_visible()
        state = page_state(admin_api, document_id)
        assert state["reviewed"] is True and state["reviewedAt"] and state["reviewedBy"] is not None
        line = admin_api.get(f"/api/lines/{lines[2]['id']}/history")
        assert line.status_code == 200 and line.json(), "the typed line was saved"
        assert admin_api.get(f"/api/documents/{document_id}/lines").json()[2]["currentText"].endswith(" geprüft")
        screenshot(page, "document-reviewed-desktop")

        page.reload()
        expect(page.locator("html")).to_have_attribute("data-viewer-ready", "true")
        expect(toggle(page)).to_have_attribute("aria-pressed", "true")
        toggle(page).focus()
        page.keyboard.press("Enter")
        expect(toggle(page)).to_have_attribute("aria-pressed", "false")
        expect(page.locator("#save-announcer")).to_have_text("Seite 1 ist nicht mehr als geprüft markiert.")
        expect(thumbnails.get_by_role("link", name="Seite 1", exact=True)).to_be_visible()
        assert page_state(admin_api, document_id)["reviewed"] is False


def test_a_line_in_conflict_keeps_the_page_from_being_marked_reviewed(
    browsing: Browsing, admin_api: httpx.Client
) -> None:
    document_id, lines = unreviewed_document(admin_api, "Brief mit Konflikt", lines=3)
    with browsing.page("archivist") as page:
        open_view(page, document_id)
        changed = admin_api.patch(f"/api/lines/{lines[0]['id']}", json={"text": "Von anderer Hand", "version": 1})
        assert changed.status_code == 200, changed.text
        field(page, 1).fill("Meine Lesart")
        toggle(page).click()
        warning = page.locator("#notices .notice--warning").filter(has_text="Zeile 1 ist noch nicht gespeichert")
        expect(warning).to_be_visible()
        expect(toggle(page)).to_have_attribute("aria-pressed", "false")
        expect(page.locator(f"#line-{lines[0]['id']} .conflict")).to_be_visible()
        assert page_state(admin_api, document_id)["reviewed"] is False


def test_a_refusal_shows_the_catalogs_message_fetched_only_then(browsing: Browsing, admin_api: httpx.Client) -> None:
    document_id, _ = unreviewed_document(admin_api, "Brief im Papierkorb", lines=2)
    with browsing.page("archivist") as page:
        asked: list[str] = []

        def note(request: Request) -> None:
            if "/i18n/" in request.url:
                asked.append(request.url)

        page.on("request", note)
        open_view(page, document_id)
        # The OCR panel's own first reads are done: a late one would fail on the trashed document too.
        expect(page.locator("#ocr-panel")).to_have_attribute("data-loaded", "true")
        assert page.locator("#error-messages").count() == 0
        assert asked == [], "no error messages are fetched while there is no error"
        trashed = admin_api.delete(f"/api/documents/{document_id}")
        assert trashed.status_code == 204, trashed.text
        toggle(page).click()
        expected = RENDERER.error_message("de", "DOCUMENT_NOT_FOUND")
        notice = page.locator("#notices .notice--error")
        expect(notice).to_have_text(re.compile(re.escape(expected)))
        expect(toggle(page)).to_have_attribute("aria-pressed", "false")
        assert len(asked) == 1 and re.search(r"/i18n/errors\.de\.json\?v=[0-9a-f]{12}$", asked[0]), asked
        # The next error needs no second fetch, and the same message is one notice, told again.
        notice.evaluate("element => { element.dataset.first = 'yes'; }")
        toggle(page).click()
        expect(page.locator("#notices .notice--error:not([data-first])")).to_have_count(1)
        expect(notice).to_have_count(1)
        expect(notice).to_have_text(re.compile(re.escape(expected)))
        assert len(asked) == 1, asked


def test_different_errors_each_keep_their_notice_and_the_same_one_is_not_piled_up(
    browsing: Browsing, admin_api: httpx.Client
) -> None:
    document_id, _ = unreviewed_document(admin_api, "Brief mit Meldungen", lines=1)
    with browsing.page("archivist") as page:
        open_view(page, document_id)
        expect(page.locator("#ocr-panel")).to_have_attribute("data-loaded", "true")
        for text, kind in (
            ("Erste Meldung", "error"),
            ("Zweite Meldung", "error"),
            ("Erste Meldung", "error"),
            ("Erste Meldung", "info"),
        ):
            page.evaluate(
                "async ([text, kind]) => (await import('/static/js/api.js')).announce(text, kind)", [text, kind]
            )
        errors = page.locator("#notices .notice--error")
        expect(errors).to_have_count(2)
        # The repeated message moved to the end: it is the newest.
        expect(errors.nth(0)).to_contain_text("Zweite Meldung")
        expect(errors.nth(1)).to_contain_text("Erste Meldung")
        expect(page.locator("#notices .notice--info")).to_have_count(1)
        # Keyboard focus on the notice that is told again stays with it: on the new one's close button.
        errors.nth(1).get_by_role("button").focus()
        page.evaluate("async () => (await import('/static/js/api.js')).announce('Erste Meldung', 'error')")
        expect(errors).to_have_count(2)
        expect(errors.nth(1).get_by_role("button")).to_be_focused()


def test_without_the_error_messages_an_error_still_reads_calmly(browsing: Browsing, admin_api: httpx.Client) -> None:
    document_id, _ = unreviewed_document(admin_api, "Brief ohne Verbindung", lines=2)
    with browsing.page("archivist") as page:
        page.route("**/i18n/**", lambda route: route.abort())
        open_view(page, document_id)
        assert admin_api.delete(f"/api/documents/{document_id}").status_code == 204
        toggle(page).click()
        general = RENDERER.gettext(
            "de", "Something went wrong. Please try again; if it happens again, tell your admin."
        )
        assert general != "Something went wrong. Please try again; if it happens again, tell your admin."
        expect(page.locator("#notices .notice--error")).to_have_text(re.compile(re.escape(general)))


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("language", LANGUAGES)
def test_a_reviewed_page_is_accessible_in_every_language_and_width(
    browsing: Browsing, reviewed: int, language: str, width: str
) -> None:
    with browsing.page("archivist", language, width) as page:
        open_view(page, reviewed)
        expect(page.locator("#page-review-toggle")).to_have_attribute("aria-pressed", "true")
        expect(page.locator('.thumbnail[aria-current="page"] .thumbnail__reviewed')).to_be_visible()
        page.locator("#page-review-toggle").scroll_into_view_if_needed()
        audit_page(page, "reviewed page", "document-reviewed", language, width)


def test_the_error_messages_are_one_cached_file_per_language(live: LiveSystem) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as client:
        html = client.get("/login", headers={"Accept": "text/html"}).text
        assert 'id="error-messages"' not in html
        assert f'<meta name="error-messages" content="{RENDERER.error_catalogs["de"].url}">' in html
        for language in UI_LANGUAGES:
            catalog = RENDERER.error_catalogs[language]
            fresh = client.get(catalog.url)
            assert fresh.status_code == 200, fresh.text
            assert fresh.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert fresh.headers["content-type"].startswith("application/json")
            messages = fresh.json()
            assert set(messages) == set(ERROR_MESSAGES)
            assert messages["LAST_ADMIN"] == RENDERER.error_message(language, "LAST_ADMIN")
            # Without the content's hash, or with yesterday's, it must be asked for again.
            for stale in (f"/i18n/errors.{language}.json", f"/i18n/errors.{language}.json?v=000000000000"):
                again = client.get(stale)
                assert again.status_code == 200 and again.headers["cache-control"] == "no-cache"
                # Asked again, unchanged: no body.
                same = client.get(stale, headers={"If-None-Match": again.headers["etag"]})
                assert same.status_code == 304 and same.content == b""
            changed = client.get(catalog.url, headers={"If-None-Match": '"000000000000"'})
            assert changed.status_code == 200 and changed.json() == messages
        for wrong in ("xx", "..%2Fsecret", "de.json%00"):
            assert client.get(f"/i18n/errors.{wrong}.json").status_code == 404
