"""The web UI's pages attacked over HTTP (no browser): static files' caching and paths, where a
login may send the browser, and page addresses with any query a person or a link can carry.

Each test here failed before the fix it names; the browser-side attacks (scripts in stored text)
are in tests/web/test_security.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from backend.web.rendering import StaticFiles as StaticVersions
from tests.backend.conftest import PASSWORD, Actors

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
IMMUTABLE = "public, max-age=31536000, immutable"


@pytest.fixture
def browser(actors: Actors) -> Iterator[TestClient]:
    """A logged-in browser (the session cookie) whose server errors come back as responses."""
    client = TestClient(actors.client.app, raise_server_exceptions=False)
    login = client.post("/api/auth/login", json={"username": "erika", "password": PASSWORD})
    assert login.status_code == 200, login.text
    yield client


def _version(client: TestClient, name: str) -> str:
    settings_ = client.app.state.services.settings  # type: ignore[attr-defined]
    return StaticVersions(settings_.frontend_dir / "static").version(name)


def test_only_the_address_with_the_content_s_own_hash_is_kept_for_a_year(browser: TestClient) -> None:
    version = _version(browser, "js/api.js")
    assert browser.get(f"/static/js/api.js?v={version}").headers["cache-control"] == IMMUTABLE
    # A backend still on the old release, asked for the new release's address (or any other v):
    # kept a year, the browser would run this old file against the new pages.
    for query in ("v=0123456789ab", "v=", "xv=1", f"v={version}&v=0123456789ab", f"v={version}x", "v=%FF"):
        response = browser.get(f"/static/js/api.js?{query}")
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-cache", query
        assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    [
        "/static/..%2f..%2fpyproject.toml",
        "/static/%2e%2e/%2e%2e/pyproject.toml",
        "/static/js/..%5c..%5c..%5cpyproject.toml",
        "/static/js/api.js%00.png",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/static/js/",
        "/static/",
    ],
)
def test_static_files_never_leave_their_folder(browser: TestClient, path: str) -> None:
    response = browser.get(path)
    assert response.status_code == 404
    assert "tool." not in response.text and "root:" not in response.text


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "/\r\n/evil.example",
        "javascript:alert(1)",
        "https://evil.example",
        " //evil.example",
        "/%0d%0aSet-Cookie: x=1",
    ],
)
def test_a_login_sends_the_browser_only_to_this_site(actors: Actors, target: str) -> None:
    client = TestClient(actors.client.app, raise_server_exceptions=False)
    page = client.get("/login", params={"next": target}, headers={"Accept": "text/html"})
    next_ = re.search(r'data-next="([^"]*)"', page.text)
    assert next_ is not None
    assert next_.group(1).startswith("/") and not next_.group(1).startswith(("//", "/\\"))
    assert "\r" not in next_.group(1) and "\n" not in next_.group(1)
    client.post("/api/auth/login", json={"username": "erika", "password": PASSWORD})
    answer = client.get("/login", params={"next": target}, follow_redirects=False)
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert location.startswith("/") and not location.startswith(("//", "/\\")), location
    assert "set-cookie" not in answer.headers


# Any text a link may carry: control characters and NUL (PostgreSQL refuses NUL in text), bytes
# that are no UTF-8, huge numbers, dates out of range, markup.
_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["\x00", "a\x00b", "%", "9" * 40, "-1", "0", "1e9", "2026-13-45", "0001-01-01", "<script>"]),
)
_RAW = st.one_of(_TEXT.map(lambda text: text.encode("utf-8", "surrogatepass")), st.binary(max_size=12))


def _query(values: dict[str, bytes]) -> str:
    return "&".join(f"{name}={quote_from_bytes(value)}" for name, value in values.items())


@FUZZ
@given(
    values=st.dictionaries(
        st.sampled_from(["q", "writer", "dateFrom", "dateTo", "status", "page"]), _RAW, min_size=1, max_size=6
    )
)
@example(values={"q": b"brief", "writer": b"a\x00"})  # a 500 on PostgreSQL before the fix
@example(values={"writer": b"\x00", "status": b"done"})
def test_the_search_page_answers_any_query_without_a_server_error(
    browser: TestClient, values: dict[str, bytes]
) -> None:
    response = browser.get(f"/search?{_query(values)}", headers={"Accept": "text/html"})
    assert response.status_code < 500, (values, response.text[:300])
    assert "<script>" not in response.text  # the layout's scripts all have attributes; a bare one is echoed input


@FUZZ
@given(
    path=st.sampled_from(["/documents/1", "/documents/2147483647", "/account", "/import", "/login", "/setup"]),
    values=st.dictionaries(st.sampled_from(["page", "line", "next", "q", "limit"]), _RAW, max_size=4),
)
def test_every_page_answers_any_query_without_a_server_error(
    browser: TestClient, path: str, values: dict[str, bytes]
) -> None:
    response = browser.get(f"{path}?{_query(values)}", headers={"Accept": "text/html"}, follow_redirects=False)
    assert response.status_code < 500, (path, values, response.text[:300])


def test_the_search_api_refuses_a_writer_with_a_nul_rather_than_failing(browser: TestClient) -> None:
    # PostgreSQL refuses NUL in text: the query must not reach it.
    response = browser.get("/api/search", params={"q": "brief", "writer": "a\x00"})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "INVALID_REQUEST"
