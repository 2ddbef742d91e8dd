"""The documents page (list, filters, upload by drag and drop and picker, batch OCR, moving to
the trash) and the admins' trash (restore, delete for good), in the real browser against the
live backend and OCR service."""

from __future__ import annotations

import base64
import itertools
import random
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import FilePayload, JSHandle, Page, expect

from tests.support.learning_loop import PAGE_WIDTH, make_letter
from tests.support.synthetic import render_page, to_png
from tests.web.support import (
    LANGUAGES,
    WIDTHS,
    Browsing,
    LiveSystem,
    audit_page,
)

# Seeds of this module's generated files: other modules upload into the same live archive, and
# the archive refuses a file it has already (by its bytes).
_seeds = itertools.count(1_600_000)


def png(words: str) -> bytes:
    """A small page image, different for each call (the seed is drawn on it too)."""
    return to_png(render_page([words, f"Nr. {next(_seeds)}"], width=420, height=220, font_size=26, margin=30).image)


def upload(client: httpx.Client, title: str, content: bytes | None = None, **fields: str) -> dict[str, Any]:
    response = client.post(
        "/api/documents",
        files={"file": ("scan.png", content or png(title), "application/octet-stream")},
        data={"title": title, **fields},
    )
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer


def in_list(client: httpx.Client, title: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get("/api/documents", params={"title": title}).json()["items"]
    return items


def drop_files(page: Page, files: list[tuple[str, bytes, str]]) -> None:
    """Drop files onto the upload zone as a person's drag from the desktop would (a DataTransfer)."""
    payload = [{"name": n, "type": t, "b64": base64.b64encode(b).decode()} for n, b, t in files]
    transfer: JSHandle = page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], f.name, { type: f.type }));
            }
            return transfer;
        }""",
        payload,
    )
    page.dispatch_event("#dropzone", "dragenter", {"dataTransfer": transfer})
    expect(page.locator("#dropzone")).to_have_class(re.compile("dropzone--active"))
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})


@pytest.fixture(scope="module")
def arranged(live: LiveSystem) -> Iterator[dict[str, Any]]:
    """A document in the list and one in the trash, so both pages have rows to check."""
    with live.api("admin") as client:
        shown = upload(client, "Brief an Tante Hedwig", writer="Hedwig Brandt", date="1921-03")
        trashed = upload(client, "Alte Rechnung aus dem Keller")
        assert client.delete(f"/api/documents/{trashed['id']}").status_code == 204
        yield {"shown": shown, "trashed": trashed}


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_documents_page_is_accessible_in_every_language_and_width(
    browsing: Browsing, arranged: dict[str, Any], language: str, width: str
) -> None:
    with browsing.page("archivist", language, width) as page:
        page.goto("/documents")
        expect(page.locator("html")).to_have_attribute("lang", language)
        expect(page.locator(f'tr[data-document-id="{arranged["shown"]["id"]}"]')).to_be_visible()
        # A file waiting in the upload list is part of what a person sees: checked too.
        drop_files(page, [("Brief 1921.png", png("Hallo"), "image/png")])
        expect(page.locator(".upload-row")).to_have_count(1)
        audit_page(page, "documents", "documents", language, width)


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_trash_page_is_accessible_in_every_language_and_width(
    browsing: Browsing, arranged: dict[str, Any], language: str, width: str
) -> None:
    with browsing.page("admin", language, width) as page:
        page.goto("/admin/trash")
        expect(page.locator(f'tr[data-document-id="{arranged["trashed"]["id"]}"]')).to_be_visible()
        audit_page(page, "trash", "trash", language, width)


def test_an_empty_archive_view_says_what_to_do(browsing: Browsing) -> None:
    with browsing.page("archivist") as page:
        page.goto("/documents?title=gibt-es-nicht-1600")
        expect(page.get_by_text("Zu diesem Filter passt kein Dokument.")).to_be_visible()
        expect(page.locator("#documents-wrap")).to_be_hidden()
        page.get_by_role("link", name="Alle Dokumente anzeigen").click()
        expect(page).to_have_url(re.compile(r"/documents$"))


def test_two_dropped_files_upload_with_progress_and_a_refused_one_says_why(
    browsing: Browsing, live: LiveSystem
) -> None:
    marker = f"Abwurf {next(_seeds)}"
    with browsing.page("archivist") as page:
        page.goto("/documents")
        drop_files(
            page,
            [
                (f"{marker} Seite eins.png", png(marker), "image/png"),
                ("Einkaufszettel.txt", b"Milch, Brot, Butter\n", "text/plain"),
                (f"{marker} Seite zwei.png", png(marker), "image/png"),
            ],
        )
        rows = page.locator(".upload-row")
        expect(rows).to_have_count(3)
        # The title is the file name without its extension, and it can be changed before uploading.
        first_title = rows.nth(0).get_by_label("Titel")
        expect(first_title).to_have_value(f"{marker} Seite eins")
        first_title.fill(f"{marker} Brief an Otto")
        rows.nth(0).get_by_label("Geschrieben von (freiwillig)").fill("Otto Brandt")
        rows.nth(0).get_by_label("Datum (freiwillig)").fill("1916-05")
        # Every progress event is recorded as it happens: the bars must really be driven.
        page.evaluate(
            """() => {
                window.seenProgress = [];
                for (const bar of document.querySelectorAll('.upload-row progress')) {
                    new MutationObserver(() => window.seenProgress.push(bar.value))
                        .observe(bar, { attributes: true, attributeFilter: ['value'] });
                }
            }"""
        )
        page.get_by_role("button", name="Hochladen", exact=True).click()
        expect(page.locator("#notices")).to_contain_text("Hochladen fertig: 2 aufgenommen, 1 nicht aufgenommen.")
        expect(rows.nth(0).locator(".upload-row__status")).to_contain_text("Ins Archiv aufgenommen.")
        expect(rows.nth(2).locator(".upload-row__status")).to_contain_text("Ins Archiv aufgenommen.")
        refused = rows.nth(1).locator(".upload-row__status")
        expect(refused).to_contain_text("Diese Art von Datei kann das Archiv nicht aufnehmen.")
        expect(rows.nth(1).get_by_role("button", name="Noch einmal versuchen")).to_be_visible()
        expect(rows.nth(0).locator("progress")).to_have_js_property("value", 100)
        assert 100 in page.evaluate("window.seenProgress")
        # The new documents are in the list without a reload, newest first, with what was typed.
        table_rows = page.locator("#documents-body tr")
        expect(table_rows.nth(0)).to_contain_text(f"{marker} Seite zwei")
        expect(table_rows.nth(1)).to_contain_text(f"{marker} Brief an Otto")
        expect(table_rows.nth(1)).to_contain_text("Otto Brandt")
        expect(table_rows.nth(1)).to_contain_text("1916-05")
        expect(table_rows.nth(1)).to_contain_text("Neu")
        page.wait_for_timeout(1000)  # the refusal stays (never dismissed on its own)
        expect(refused).to_be_visible()
    with live.api("archivist") as client:
        stored = in_list(client, marker)
    assert sorted(d["title"] for d in stored) == [f"{marker} Brief an Otto", f"{marker} Seite zwei"]
    otto = next(d for d in stored if d["title"].endswith("Otto"))
    assert (otto["writer"]["name"], otto["date"]) == ("Otto Brandt", "1916-05")


def test_the_picker_uploads_and_a_file_already_in_the_archive_names_its_document(
    browsing: Browsing, live: LiveSystem
) -> None:
    content = png("Doppelt")
    with live.api("archivist") as client:
        first = upload(client, f"Das Original {next(_seeds)}", content)
    with browsing.page("archivist") as page:
        page.goto("/documents")
        with page.expect_file_chooser() as chooser:
            page.get_by_role("button", name="Dateien auswählen").click()
        chooser.value.set_files(FilePayload(name="kopie.png", mimeType="image/png", buffer=content))
        row = page.locator(".upload-row")
        expect(row).to_have_count(1)
        row.get_by_label("Datum (freiwillig)").fill("im Mai")
        page.get_by_role("button", name="Hochladen", exact=True).click()
        status = row.locator(".upload-row__status")
        # A date the archive cannot read is caught before sending; what was typed stays to fix.
        expect(status).to_contain_text("Bitte schreib das Datum wie 1916, 1916-05 oder 1916-05-03.")
        expect(row.get_by_label("Datum (freiwillig)")).to_have_value("im Mai")
        expect(row.get_by_label("Datum (freiwillig)")).to_have_attribute("aria-invalid", "true")
        row.get_by_label("Datum (freiwillig)").fill("1917")
        row.get_by_role("button", name="Noch einmal versuchen").click()
        expect(status).to_contain_text(f"Diese Datei ist schon im Archiv, als „{first['title']}“.")
        expect(row.get_by_label("Titel")).to_have_value("kopie")


@pytest.mark.slow  # the real OCR service reads both documents
def test_batch_ocr_shows_each_document_s_progress_until_read_also_after_a_reload(
    browsing: Browsing, live: LiveSystem
) -> None:
    marker = f"Stapel {next(_seeds)}"
    with live.api("archivist") as client:
        ids = []
        for n in range(2):
            # Five lines on a tall page: the segmenter takes it (not wider than tall), and cheaply.
            letter = make_letter(next(_seeds), pages=1, lines_per_page=5, min_height=4 * PAGE_WIDTH)
            response = client.post(
                "/api/documents",
                files={"file": ("brief.pdf", letter.pdf, "application/pdf")},
                data={"title": f"{marker} Brief {n + 1}"},
            )
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
    with browsing.page("archivist") as page:
        page.goto(f"/documents?title={marker}")
        start = page.get_by_role("button", name="Texterkennung für die ausgewählten Dokumente starten")
        expect(start).to_be_disabled()
        # By keyboard: the first box with Space, the second by its label.
        page.get_by_label(f"„{marker} Brief 1“ auswählen").focus()
        page.keyboard.press("Space")
        page.get_by_label(f"„{marker} Brief 2“ auswählen").check()
        expect(page.locator("#selection-count")).to_have_text("2 ausgewählt")
        start.focus()
        page.keyboard.press("Enter")
        expect(page.locator("#notices")).to_contain_text("Texterkennung für 2 Dokumente gestartet.")
        rows = [page.locator(f'tr[data-document-id="{i}"]') for i in ids]
        for row in rows:
            expect(row.locator('[data-cell="status"]')).not_to_have_text("Neu")
        # Asked again while it waits or runs: said calmly, nothing started twice.
        page.get_by_label(f"„{marker} Brief 2“ auswählen").check()
        start.click()
        expect(page.locator("#notices")).to_contain_text("wartet oder läuft die Texterkennung schon")
        page.reload()  # the batch is watched again after a reload
        for row in rows:
            status = row.locator('[data-cell="status"]')
            expect(status).not_to_have_attribute("data-status", re.compile("QUEUED|RUNNING"), timeout=420_000)
            expect(status).to_have_text("Gelesen")
            expect(row.locator('[data-cell="progress"]')).to_be_hidden()
        expect(page.locator("#notices")).to_contain_text("Texterkennung fertig: 2 gelesen, 0 nicht gelesen.")
        assert page.evaluate("sessionStorage.getItem('documents.batches')") is None
    with live.api("archivist") as client:
        assert {d["status"] for d in in_list(client, marker)} == {"DONE"}


def test_moving_to_the_trash_asks_first_then_an_admin_restores_or_deletes_for_good(
    browsing: Browsing, live: LiveSystem
) -> None:
    marker = f"Papierkorb {next(_seeds)}"
    with live.api("archivist") as client:
        kept = upload(client, f"{marker} Postkarte")
        gone = upload(client, f"{marker} Zeitungsausschnitt")
    with browsing.page("archivist") as page:
        page.goto(f"/documents?title={marker}")
        row = page.locator(f'tr[data-document-id="{gone["id"]}"]')
        button = row.get_by_role("button", name="In den Papierkorb")
        button.click()
        dialog = page.get_by_role("dialog", name="In den Papierkorb legen?")
        expect(dialog).to_contain_text(f"„{marker} Zeitungsausschnitt“ in den Papierkorb legen?")
        expect(dialog.get_by_role("button", name="Abbrechen")).to_be_focused()  # the safe choice
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        expect(button).to_be_focused()  # focus is back where it was
        expect(row).to_be_visible()
        # Now by keyboard alone: Enter opens, Shift+Tab reaches "move", Enter confirms.
        page.keyboard.press("Enter")
        expect(dialog).to_be_visible()
        page.keyboard.press("Shift+Tab")
        page.keyboard.press("Enter")
        expect(row).to_have_count(0)
        expect(page.locator("#notices")).to_contain_text(f"„{marker} Zeitungsausschnitt“ liegt jetzt im Papierkorb.")
        page.reload()
        expect(page.locator(f'tr[data-document-id="{gone["id"]}"]')).to_have_count(0)
        expect(page.locator(f'tr[data-document-id="{kept["id"]}"]')).to_be_visible()
    with live.api("archivist") as client:
        client.delete(f"/api/documents/{kept['id']}")
    with browsing.page("admin") as page:
        page.goto("/admin/trash")
        restored_row = page.locator(f'tr[data-document-id="{gone["id"]}"]')
        restored_row.get_by_role("button", name="Wiederherstellen").click()
        expect(restored_row).to_have_count(0)
        expect(page.locator("#notices")).to_contain_text("ist wieder bei den Dokumenten.")
        deleted_row = page.locator(f'tr[data-document-id="{kept["id"]}"]')
        deleted_row.get_by_role("button", name="Endgültig löschen").click()
        dialog = page.get_by_role("dialog", name="Endgültig löschen?")
        expect(dialog).to_contain_text("Das lässt sich nicht rückgängig machen.")
        dialog.get_by_role("button", name="Abbrechen").click()
        expect(deleted_row).to_be_visible()
        deleted_row.get_by_role("button", name="Endgültig löschen").click()
        dialog.get_by_role("button", name="Endgültig löschen").click()
        expect(deleted_row).to_have_count(0)
        expect(page.locator("#notices")).to_contain_text(f"„{marker} Postkarte“ ist endgültig gelöscht.")
    with live.api("admin") as client:
        assert [d["id"] for d in in_list(client, marker)] == [gone["id"]]
        assert kept["id"] not in {d["id"] for d in client.get("/api/trash").json()}
        assert client.get(f"/api/documents/{kept['id']}").json()["code"] == "DOCUMENT_NOT_FOUND"


def test_an_archivist_is_refused_the_trash_page_on_the_server(browsing: Browsing) -> None:
    with browsing.page("archivist") as page:
        response = page.goto("/admin/trash")
        assert response is not None and response.status == 403
        expect(page.locator("#trash-body")).to_have_count(0)


def test_filters_are_a_link_and_narrow_the_list(browsing: Browsing, live: LiveSystem) -> None:
    marker = f"Filter {next(_seeds)}"
    with live.api("archivist") as client:
        early = upload(client, f"{marker} früh", writer=f"Frieda {marker}", date="1914-07-28")
        late = upload(client, f"{marker} spät", date="1945-05-08")
    with browsing.page("archivist") as page:
        page.goto("/documents")
        page.get_by_label("Titel enthält").fill(marker)
        page.get_by_label("Geschrieben bis").fill("1920-12-31")
        page.get_by_role("button", name="Anzeigen").click()
        expect(page).to_have_url(re.compile(r"title=Filter.*dateTo=1920-12-31"))
        ids = page.locator("#documents-body tr").evaluate_all("(rows) => rows.map((r) => Number(r.dataset.documentId))")
        assert ids == [early["id"]]
        expect(page.get_by_label("Geschrieben bis")).to_have_value("1920-12-31")  # the form keeps the filter
        page.goto(f"/documents?title={marker}&status=NEW")
        ids = page.locator("#documents-body tr").evaluate_all("(rows) => rows.map((r) => Number(r.dataset.documentId))")
        assert ids == [late["id"], early["id"]]
        page.get_by_label("Geschrieben von", exact=True).select_option(label=f"Frieda {marker}")
        page.get_by_role("button", name="Anzeigen").click()
        expect(page.locator("#documents-body tr")).to_have_count(1)
        page.goto("/documents?dateFrom=gestern")
        expect(page.get_by_text("Dieser Filter ist nicht lesbar.")).to_be_visible()


def test_paging_goes_through_every_document_once_and_keeps_the_filter(live: LiveSystem) -> None:
    marker = f"Seitenweise {next(_seeds)}"
    with live.api("archivist") as client:
        ids = [upload(client, f"{marker} {n}")["id"] for n in range(53)]
    username, password = live.archivist
    with httpx.Client(base_url=live.url, timeout=60) as browser:
        login = browser.post("/api/auth/login", json={"username": username, "password": password})
        assert login.status_code == 200
        chosen = browser.put(
            "/api/auth/language", json={"language": "de"}, headers={"X-CSRF-Token": login.json()["csrfToken"]}
        )
        assert chosen.status_code == 200, chosen.text
        seen: list[int] = []
        url: str | None = f"/documents?title={marker}"
        pages = 0
        while url:
            html = browser.get(url, headers={"Accept": "text/html"}).text
            seen += [int(i) for i in re.findall(r'<tr data-document-id="(\d+)"', html)]
            pages += 1
            older = re.search(r'<a class="button" href="([^"]+)">Ältere Dokumente</a>', html)
            url = older.group(1).replace("&amp;", "&") if older else None
            if url:
                assert "title=Seitenweise" in url and "cursor=" in url  # the filter goes along
            if pages > 1:
                assert re.search(r'href="/documents\?title=Seitenweise\+\d+">Zurück zu den neuesten', html)
    assert pages == 2
    assert seen == sorted(ids, reverse=True)


def test_any_filter_a_link_can_carry_gives_a_page_and_never_runs_as_markup(live: LiveSystem) -> None:
    """Seeded fuzzing of the filter form's values (hand-edited links, pasted text, attacks)."""
    rng = random.Random(16)
    pieces = ["<script>alert(1)</script>", '"><img src=x>', "%", "_", "\\", "\x00", "\u202e", "ü", "1916-02-30", "'--"]
    username, password = live.archivist
    with httpx.Client(base_url=live.url, timeout=60) as browser:
        assert browser.post("/api/auth/login", json={"username": username, "password": password}).status_code == 200
        for _ in range(40):
            names = rng.sample(["title", "writer", "status", "dateFrom", "dateTo", "cursor"], rng.randrange(1, 4))
            params = {
                name: "".join(rng.choice([*pieces, chr(rng.randrange(32, 0x2FFF))]) for _ in range(rng.randrange(1, 6)))
                for name in names
            }
            response = browser.get("/documents", params=params, headers={"Accept": "text/html"})
            assert response.status_code in (200, 422), (params, response.status_code)
            assert "text/html" in response.headers["content-type"]
            assert "<script>alert(1)" not in response.text and '"><img src=x>' not in response.text
