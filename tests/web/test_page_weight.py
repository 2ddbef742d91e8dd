"""No page loads more than 200 KB of CSS and JavaScript (the issue's page-weight limit), counted in the
browser from what it really fetched — module imports included."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.learning_loop import make_letter
from tests.web.support import Browsing, LiveSystem

LIMIT_BYTES = 200 * 1024
# Every script and style the page fetched, by its decoded size (the browser's own count).
ASSETS = """() => performance.getEntriesByType("resource")
  .filter((entry) => /\\.(css|js)(\\?|$)/.test(new URL(entry.name).pathname + new URL(entry.name).search))
  .map((entry) => [entry.name, entry.decodedBodySize])"""


@pytest.fixture(scope="module")
def document_id(live: LiveSystem) -> Iterator[int]:
    letter = make_letter(seed=777, pages=1, lines_per_page=5)
    with live.api("admin") as client:
        made = client.post(
            "/api/documents",
            files={"file": ("weight.pdf", letter.pdf, "application/pdf")},
            data={"title": "Gewicht der Seiten"},
        )
        assert made.status_code in (201, 409), made.text
        yield int(made.json()["id"] if made.status_code == 201 else made.json()["details"]["documentId"])


@pytest.mark.parametrize(
    "path",
    [
        "/documents",
        "/documents/{id}",
        "/search?q=brief",
        "/import",
        "/account",
        "/admin/training",
        "/admin/users",
        "/admin/trash",
    ],
)
def test_no_page_loads_more_than_200_kb_of_css_and_javascript(browsing: Browsing, document_id: int, path: str) -> None:
    with browsing.page("admin") as page:
        response = page.goto(path.format(id=document_id))
        assert response is not None and response.status == 200, path
        page.wait_for_load_state("networkidle")
        assets = page.evaluate(ASSETS)
        assert assets, f"{path}: no script or style counted — the count itself is broken"
        total = sum(size for _name, size in assets)
        assert total <= LIMIT_BYTES, f"{path}: {total} bytes of CSS+JS: {assets}"


def test_the_login_page_is_light_too(browsing: Browsing) -> None:
    with browsing.page(None) as page:
        page.goto("/login")
        page.wait_for_load_state("networkidle")
        total = sum(size for _name, size in page.evaluate(ASSETS))
        assert 0 < total <= LIMIT_BYTES
