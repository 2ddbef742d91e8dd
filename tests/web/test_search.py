"""The search page in the real browser: a corrected line is found from the header's search box,
highlighted, and its link opens the document at that line; filters, paging, the empty, nothing-found
and invalid states; what a line says is shown as text, never as markup."""

from __future__ import annotations

import random
import re
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from io import BytesIO
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.backend.transcript_files import gen_page, transkribus_page, zip_of
from tests.web.support import (
    LANGUAGES,
    WIDTHS,
    Browsing,
    LiveSystem,
    audit_page,
)


def unique_word(prefix: str = "quendel") -> str:
    """A word no other test's document holds (letters only, as the search folds words)."""
    return prefix + "".join(secrets.choice(string.ascii_lowercase) for _ in range(8))


def unique_png(width: int, height: int) -> bytes:
    """A page image no other document has (the archive refuses duplicates by content)."""
    image = Image.new("L", (width, height), 250)
    rng = random.Random(secrets.randbits(64))
    for _ in range(12):
        image.putpixel((rng.randrange(width), rng.randrange(height)), rng.randrange(200))
    out = BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def transkribus_documents(documents: Mapping[str, Sequence[Sequence[str]]]) -> bytes:
    """A Transkribus export ZIP: one folder per document (its title), each page's lines as given."""
    files: dict[str, bytes] = {}
    for folder, pages in documents.items():
        for number, texts in enumerate(pages, start=1):
            generated = gen_page(secrets.randbits(30), f"p{number}.png", lines=len(texts), width=400, height=300)
            page = replace(
                generated,
                lines=tuple(replace(line, text=text) for line, text in zip(generated.lines, texts, strict=True)),
            )
            files[f"{folder}/p{number}.png"] = unique_png(page.width, page.height)
            files[f"{folder}/page/p{number}.xml"] = transkribus_page(page)
    return zip_of(files)


def import_zip(client: httpx.Client, data: bytes, **fields: str) -> list[dict[str, Any]]:
    made = client.post("/api/imports", files={"file": ("export.zip", data, "application/zip")}, data=fields)
    assert made.status_code == 201, made.text
    documents: list[dict[str, Any]] = made.json()["documents"]
    return documents


@dataclass
class Letter:
    document: dict[str, Any]
    line: dict[str, Any]
    word: str


def correct(client: httpx.Client, line: dict[str, Any], text: str) -> dict[str, Any]:
    saved = client.patch(f"/api/lines/{line['id']}", json={"text": text, "version": line["version"]})
    assert saved.status_code == 200, saved.text
    result: dict[str, Any] = saved.json()
    return result


def corrected_letter(live: LiveSystem, text_with: str, **fields: str) -> Letter:
    """A 2-page document; its second page's third line corrected to ``text_with`` (``{word}`` in it)."""
    word = unique_word()
    title = f"Brief {word}"
    pages = [["Liebe Mutter", "wie geht es dir"], ["Hier ist alles gut", "die Kinder spielen", "viele Grüße"]]
    with live.api() as client:
        document = import_zip(client, transkribus_documents({title: pages}), **fields)[0]
        lines = client.get(f"/api/documents/{document['id']}/lines").json()
        line = next(line for line in lines if line["page"] == 2 and line["orderIndex"] == 2)
        correct(client, line, text_with.format(word=word))
    return Letter(document, line, word)


@pytest.fixture(scope="module")
def letter(live: LiveSystem) -> Letter:
    return corrected_letter(live, "viele {word} Grüße <b>fett</b> & mehr", writer="Tante Hedwig", date="1923-03")


def test_a_corrected_line_is_found_from_the_header_and_opens_the_document_at_that_line(
    browsing: Browsing, letter: Letter
) -> None:
    with browsing.page("archivist", "de") as page:
        page.goto("/search")
        box = page.get_by_role("searchbox", name="Im Archiv suchen")
        box.fill(letter.word)
        box.press("Enter")
        expect(page).to_have_url(re.compile(rf"/search\?q={letter.word}$"))
        expect(page.locator("#results-heading")).to_have_text("Gefundene Dokumente: 1")
        result = page.locator(".search-result")
        expect(result.get_by_role("link", name=f"Brief {letter.word}")).to_have_attribute(
            "href", f"/documents/{letter.document['id']}"
        )
        expect(result).to_contain_text("Tante Hedwig")
        expect(result).to_contain_text("März 1923")
        # The word highlighted, the rest of the line shown as the text it is (never as markup).
        expect(result.locator("mark")).to_have_text([letter.word])
        expect(result.locator(".search-hit__text")).to_have_text(f"viele {letter.word} Grüße <b>fett</b> & mehr")
        assert result.locator(".search-hit__text b").count() == 0
        hit = result.get_by_role("link", name=re.compile(r"Seite 2, Zeile 3"))
        expect(hit).to_contain_text("Korrigiert")
        hit.click()
        expect(page).to_have_url(re.compile(rf"/documents/{letter.document['id']}\?page=2&line={letter.line['id']}$"))


def test_search_and_open_a_hit_by_keyboard_alone(browsing: Browsing, letter: Letter) -> None:
    with browsing.page("archivist", "en", "tablet") as page:
        page.goto("/search")
        page.get_by_label("Words to look for").focus()
        page.keyboard.type(letter.word)
        page.keyboard.press("Enter")
        expect(page.locator("#results-heading")).to_have_text("Documents found: 1")
        target = f"/documents/{letter.document['id']}?page=2&line={letter.line['id']}"
        for _ in range(40):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.getAttribute('href')") == target:
                break
        else:
            pytest.fail("the hit's link was never reached with Tab")
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(re.escape(target) + "$"))


def test_the_empty_the_invalid_and_the_nothing_found_states_speak_plainly(browsing: Browsing) -> None:
    with browsing.page("archivist", "de") as page:
        page.goto("/search")
        expect(page.locator("#results-heading")).to_have_text("Im Archiv suchen")
        expect(page.locator("main")).to_contain_text("Gib oben ein oder mehrere Wörter ein")
        # Only an exclusion: nothing to look for. The catalog's message, and what was typed stays.
        page.get_by_label("Gesuchte Wörter").fill("-krieg")
        page.get_by_label("Gesuchte Wörter").press("Enter")
        expect(page.get_by_role("alert")).to_have_text(
            "So lässt sich nicht suchen. Bitte gib mindestens ein Wort ein, nach dem gesucht werden soll "
            "(höchstens 200 Zeichen)."
        )
        expect(page.get_by_label("Gesuchte Wörter")).to_have_value("-krieg")
        page.get_by_label("Gesuchte Wörter").fill(unique_word("nirgends"))
        page.get_by_label("Gesuchte Wörter").press("Enter")
        expect(page.locator("#results-heading")).to_have_text("Nichts gefunden")
        # A date that is no date (typed into the address): the general message, the page still works.
        page.goto("/search?q=mutter&dateFrom=1923-13-45")
        expect(page.get_by_role("alert")).to_contain_text("Bitte prüfe deine Eingaben")


def test_filters_narrow_the_results_and_stay_in_the_form(browsing: Browsing, live: LiveSystem) -> None:
    word = unique_word("holunder")
    with live.api() as client:
        anna = import_zip(client, transkribus_documents({f"Anna {word}": [[f"von {word} Anna"]]}), writer="Anna Roth")
        karl = import_zip(client, transkribus_documents({f"Karl {word}": [[f"von {word} Karl"]]}), writer="Karl Roth")
    with browsing.page("archivist", "de") as page:
        page.goto(f"/search?q={word}")
        expect(page.locator("#results-heading")).to_have_text("Gefundene Dokumente: 2")
        page.get_by_label("Geschrieben von").select_option(label="Karl Roth")
        page.get_by_role("button", name="Suchen", exact=True).last.click()
        expect(page.locator("#results-heading")).to_have_text("Gefundene Dokumente: 1")
        expect(page.locator(".search-result h3 a")).to_have_attribute("href", f"/documents/{karl[0]['id']}")
        expect(page.get_by_label("Geschrieben von")).to_have_value(karl[0]["writer"]["slug"])
        expect(page.get_by_label("Gesuchte Wörter")).to_have_value(word)
        page.get_by_role("link", name="Filter entfernen").click()
        expect(page.locator("#results-heading")).to_have_text("Gefundene Dokumente: 2")
        assert anna[0]["id"] != karl[0]["id"]


def test_many_results_are_paged(browsing: Browsing, live: LiveSystem) -> None:
    word = unique_word("paging")
    documents = {f"Seite {n:02d} {word}": [[f"{word} Nummer {n}"]] for n in range(23)}
    with live.api() as client:
        made = import_zip(client, transkribus_documents(documents))
    assert len(made) == 23
    with browsing.page("archivist", "de") as page:
        page.goto(f"/search?q={word}")
        expect(page.locator("#results-heading")).to_have_text("Gefundene Dokumente: 23")
        expect(page.locator(".search-result")).to_have_count(20)
        pager = page.get_by_role("navigation", name="Ergebnisseiten")
        expect(pager.get_by_role("link", name="Seite 1 von 2")).to_have_attribute("aria-current", "page")
        pager.get_by_role("link", name="Nächste Seite").click()
        expect(page).to_have_url(re.compile(rf"/search\?q={word}&page=2$"))
        expect(page.locator(".search-result")).to_have_count(3)
        second = set(page.locator(".search-result h3").all_inner_texts())
        page.get_by_role("link", name="Vorige Seite").click()
        expect(page.locator(".search-result")).to_have_count(20)
        first = set(page.locator(".search-result h3").all_inner_texts())
        # Every document once, none on both pages.
        assert not first & second and len(first | second) == 23


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_search_page_is_accessible_in_every_language_and_width(
    browsing: Browsing, letter: Letter, language: str, width: str
) -> None:
    with browsing.page("archivist", language, width) as page:
        page.goto(f"/search?q={letter.word}+Grüße")
        expect(page.locator(".search-result")).to_have_count(1)
        audit_page(page, "search", "search", language, width)


def test_the_search_page_needs_a_login(browsing: Browsing) -> None:
    with browsing.page(None) as page:
        page.goto("/search?q=mutter")
        expect(page).to_have_url(re.compile(r"/login\?next=/search%3Fq%3Dmutter$"))
