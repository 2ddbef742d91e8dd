"""Stored and reflected script injection, attacked in the real browser: a document whose title,
writer and line texts are markup and script, then every page that shows them, and the search
with a hostile query.

The pages' CSP would stop an inline handler even where text were inserted as markup, so a test
that only watched ``window.__pwned`` could never fail; each check here also proves the text
arrived as text: no element the payloads would create exists, the exact text is shown, and the
browser reported no CSP violation (a blocked injection is still an injection).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page, expect

from tests.web.support import Browsing, LiveSystem
from tests.web.test_search import import_zip, transkribus_documents, unique_word

# Each sets window.__pwned where it runs; none contains "/" (the title is a ZIP folder's name).
TITLE = "<img src=x onerror=window.__pwned=1 data-pwn=title>\"'&amp;"
WRITER = '"><svg onload=window.__pwned=2 data-pwn=writer></svg>'


def hostile_lines(word: str) -> list[str]:
    return [
        f"{word} </textarea><img src=x onerror=window.__pwned=3 data-pwn=line>",
        f"{word} <script>window.__pwned=4</script> {{{{7*7}}}} {{name}}",
        f"\"'><iframe srcdoc='<script>parent.__pwned=5</script>' data-pwn=frame></iframe> {word}",
        f"{word} ]]><!-- --><a href=javascript:window.__pwned=6 data-pwn=link>x</a>&lt;b&gt;",
    ]


WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(event.violatedDirective + " " + (event.blockedURI || "") + " " + (event.sample || ""));
});
"""


@pytest.fixture(scope="module")
def hostile(live: LiveSystem) -> dict[str, Any]:
    word = unique_word("xss")
    with live.api("archivist") as client:
        documents = import_zip(client, transkribus_documents({TITLE: [hostile_lines(word)]}), writer=WRITER)
    assert len(documents) == 1
    return {"document": documents[0], "word": word}


@contextmanager
def watched(browsing: Browsing, who: str = "archivist") -> Iterator[Page]:
    with browsing.page(who) as page:
        page.add_init_script(WATCH)
        yield page
        assert page.evaluate("window.__pwned") is None
        assert page.locator("[data-pwn]").count() == 0, "a payload became an element"
        assert page.evaluate("window.__violations") == []


def test_a_document_s_hostile_title_writer_and_lines_stay_text_in_the_document_view(
    browsing: Browsing, hostile: dict[str, Any]
) -> None:
    document, word = hostile["document"], hostile["word"]
    with watched(browsing) as page:
        page.goto(f"/documents/{document['id']}")
        expect(page.locator("html[data-viewer-ready=true]")).to_have_count(1)
        expect(page.get_by_role("heading", level=1)).to_have_text(TITLE)
        expect(page.locator(".document-meta")).to_contain_text(WRITER)
        fields = page.locator("textarea.line__text")
        expect(fields).to_have_count(len(hostile_lines(word)))
        for index, text in enumerate(hostile_lines(word)):
            expect(fields.nth(index)).to_have_value(text)
        assert TITLE in page.title()
        # The line's crop and the selection run the page's script over the lines: still text.
        fields.nth(0).focus()
        fields.nth(0).press("Tab")
        expect(fields.nth(1)).to_be_focused()


def test_hostile_hits_and_a_hostile_query_stay_text_on_the_search_page(
    browsing: Browsing, hostile: dict[str, Any]
) -> None:
    word = hostile["word"]
    query = f'{word} "<img src=x onerror=window.__pwned=7 data-pwn=query>'
    with watched(browsing) as page:
        page.goto(f"/search?q={word}")
        result = page.locator(".search-result").filter(has_text=word)
        expect(result).to_have_count(1)
        expect(result.get_by_role("link", name=TITLE)).to_be_visible()
        expect(result).to_contain_text(WRITER)
        expect(result.locator(".search-hit__text")).to_have_count(len(hostile_lines(word)))
        shown = result.locator(".search-hit__text").all_inner_texts()
        assert sorted(shown) == sorted(hostile_lines(word))
        expect(result.locator("mark").first).to_have_text(word)
    with watched(browsing) as page:
        page.goto("/search?" + urlencode({"q": query}))
        expect(page.locator("#search-q")).to_have_value(query)
        expect(page.locator("#site-search-input")).to_have_value(query)
        assert query in page.title()


def test_hostile_titles_and_writers_stay_text_in_the_documents_list_and_its_dialog(
    browsing: Browsing, hostile: dict[str, Any]
) -> None:
    document = hostile["document"]
    with watched(browsing) as page:
        page.goto("/documents?" + urlencode({"title": TITLE}))
        row = page.locator(f'tr[data-document-id="{document["id"]}"]')
        expect(row).to_have_count(1)
        expect(row.get_by_role("link", name=TITLE)).to_be_visible()
        expect(row).to_contain_text(WRITER)
        expect(page.locator("#filter-title")).to_have_value(TITLE)
        row.get_by_role("button", name="In den Papierkorb").click()
        dialog = page.locator("#trash-dialog")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text(TITLE)
        dialog.get_by_role("button", name="Abbrechen").click()


def test_hostile_titles_and_writers_stay_text_in_the_trash(browsing: Browsing, live: LiveSystem) -> None:
    word = unique_word("xsstrash")
    with live.api("archivist") as client:
        [made] = import_zip(client, transkribus_documents({TITLE: [[word]]}), writer=WRITER)
        assert client.delete(f"/api/documents/{made['id']}").status_code == 204
    with watched(browsing, "admin") as page:
        page.goto("/admin/trash")
        row = page.locator(f'tr[data-document-id="{made["id"]}"]')
        expect(row.get_by_role("link", name=TITLE)).to_be_visible()
        expect(row).to_contain_text(WRITER)
        row.get_by_role("button", name="Endgültig löschen").click()
        dialog = page.locator("#delete-dialog")
        expect(dialog).to_contain_text(TITLE)
        dialog.get_by_role("button", name="Abbrechen").click()
