"""The web UI's pages attacked over HTTP (no browser): static files' caching and paths, where a
login may send the browser, and page addresses with any query a person or a link can carry.

Each test here failed before the fix it names; the browser-side attacks (scripts in stored text)
are in tests/web/test_security.py."""

from __future__ import annotations

import importlib
import pkgutil
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote_from_bytes

import pytest
from fastapi import APIRouter
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

import backend.web
from backend.settings import Settings
from backend.users.models import Role
from backend.web.rendering import StaticFiles as StaticVersions
from tests.backend.conftest import PASSWORD, AppFactory, add_user, bearer

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
IMMUTABLE = "public, max-age=31536000, immutable"


@pytest.fixture
def app(app_factory: AppFactory) -> TestClient:
    """The backend with an admin and an archivist; its (absent) OCR service is tried once, without
    waiting, so a page that asks it answers at once. Server errors come back as responses."""
    client = TestClient(app_factory(ocr_attempts=1, ocr_backoff_s=0).app, raise_server_exceptions=False)
    add_user(client, "admin", Role.ADMIN)
    add_user(client, "erika", Role.ARCHIVIST)
    return client


@pytest.fixture
def browser(app: TestClient) -> Iterator[TestClient]:
    """The archivist's browser, logged in (the session cookie)."""
    client = TestClient(app.app, raise_server_exceptions=False)
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
def test_a_login_sends_the_browser_only_to_this_site(app: TestClient, target: str) -> None:
    client = TestClient(app.app, raise_server_exceptions=False)
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
@example(path="/documents/1", values={"page": b"99999999999999999999999"})
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


@FUZZ
@given(
    values=st.dictionaries(
        st.sampled_from(["title", "writer", "status", "dateFrom", "dateTo", "cursor", "limit"]), _RAW, max_size=6
    )
)
@example(values={"title": b"a\x00", "writer": b"\x00"})
@example(values={"cursor": b"9999999999"})
@example(values={"cursor": b"99999999999"})
def test_the_documents_page_answers_any_filter_without_a_server_error(
    browser: TestClient, values: dict[str, bytes]
) -> None:
    response = browser.get(f"/documents?{_query(values)}", headers={"Accept": "text/html"})
    assert response.status_code < 500, (values, response.text[:300])
    assert "<script>" not in response.text


def _page_paths() -> list[str]:
    """Every page route of the web UI (each module of backend/web with a router), path parameters
    as 1, so a page added later is attacked here too without anyone listing it."""
    paths = []
    for module in pkgutil.iter_modules(backend.web.__path__):
        router = getattr(importlib.import_module(f"backend.web.{module.name}"), "router", None)
        if not isinstance(router, APIRouter):
            continue
        for route in router.routes:
            if isinstance(route, APIRoute) and "GET" in (route.methods or ()) and not route.path.startswith("/i18n"):
                paths.append(re.sub(r"\{[^}]+\}", "1", route.path))
    return sorted(set(paths))


def test_an_archivist_reaches_no_admin_page_and_a_stranger_no_page_but_the_public_ones(app: TestClient) -> None:
    archivist = TestClient(app.app, raise_server_exceptions=False)
    assert archivist.post("/api/auth/login", json={"username": "erika", "password": PASSWORD}).status_code == 200
    stranger = TestClient(app.app, raise_server_exceptions=False)
    paths = _page_paths()
    admin_paths = [path for path in paths if path.startswith("/admin")]
    assert "/admin/users" in admin_paths and "/admin/trash" in admin_paths
    for path in admin_paths:
        refused = archivist.get(path, headers={"Accept": "text/html"})
        assert refused.status_code == 403, path
    for path in paths:
        if path in ("/", "/login", "/setup"):
            continue
        answer = stranger.get(path, headers={"Accept": "text/html"}, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login?next="), path


def test_every_page_and_error_page_forbids_framing_sniffing_caching_and_the_referrer(browser: TestClient) -> None:
    paths = [*_page_paths(), "/no-such-page", "/documents/not-a-number"]
    for path in paths:
        response = browser.get(path, headers={"Accept": "text/html"})
        if not response.headers.get("content-type", "").startswith("text/html"):
            continue
        headers = response.headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert "script-src 'self';" in headers["content-security-policy"], path
        assert headers["x-frame-options"] == "DENY", path
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["cache-control"] == "no-store", path
        assert headers["referrer-policy"] == "no-referrer", path


def _logged_in(app: TestClient) -> tuple[TestClient, str]:
    client = TestClient(app.app, raise_server_exceptions=False)
    login = client.post("/api/auth/login", json={"username": "erika", "password": PASSWORD})
    assert login.status_code == 200
    return client, login.json()["csrfToken"]


def test_a_session_is_fresh_at_each_login_bound_to_its_own_csrf_token_and_dead_after_logout(app: TestClient) -> None:
    planted = "attacker-knows-this-cookie"
    client = TestClient(app.app, raise_server_exceptions=False)
    client.cookies.set("archiv_session", planted)
    login = client.post("/api/auth/login", json={"username": "erika", "password": PASSWORD})
    assert login.status_code == 200
    csrf = login.json()["csrfToken"]
    sessions = {cookie.value for cookie in client.cookies.jar if cookie.name == "archiv_session"}
    session = next(iter(sessions - {planted}))
    client.cookies.clear()
    client.cookies.set("archiv_session", session)
    other, other_csrf = _logged_in(app)
    # Another session's token, no token, a token in a cookie only: the cookie alone changes nothing.
    for headers in ({"X-CSRF-Token": other_csrf}, {}, {"X-CSRF-Token": ""}):
        refused = client.post("/api/auth/logout", headers=headers)
        assert refused.status_code == 403 and refused.json()["code"] == "CSRF_FAILED"
        assert client.get("/api/auth/me").status_code == 200
    assert client.put("/api/auth/language", json={"language": "es"}).status_code == 403
    assert client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    # The old cookie, kept by whoever copied it, opens nothing any more.
    stale = TestClient(app.app, raise_server_exceptions=False)
    stale.cookies.set("archiv_session", session)
    assert stale.get("/api/auth/me").status_code == 401
    page = stale.get("/documents", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    assert other.get("/api/auth/me").status_code == 200  # the other session is not touched


def test_no_api_answer_may_be_cached_or_sniffed_unless_its_route_says_so(app: TestClient) -> None:
    client = app
    paths = [path for path, methods in client.app.openapi()["paths"].items() if "get" in methods]  # type: ignore[attr-defined]
    assert "/api/auth/me" in paths and "/api/users" in paths
    for who in (bearer(client, "admin"), bearer(client, "erika"), {}):
        for path in paths:
            response = client.get(re.sub(r"\{[^}]+\}", "1", path), headers=who)
            cache = response.headers.get("cache-control", "")
            assert cache == "no-store" or cache.startswith("private"), (path, response.status_code, cache)
            assert response.headers.get("x-content-type-options") == "nosniff", (path, response.status_code)


def test_a_link_in_the_static_folder_to_a_file_outside_is_not_served(app_factory: AppFactory, tmp_path: Path) -> None:
    settings_ = Settings(database_url="sqlite://")
    frontend = tmp_path / "frontend"
    shutil.copytree(settings_.frontend_dir, frontend)
    secret = tmp_path / "secret.txt"
    secret.write_text("the operator's secret")
    (frontend / "static" / "js" / "leak.js").symlink_to(secret)
    client = TestClient(app_factory(frontend_dir=frontend).app, raise_server_exceptions=False)
    for path in ("/static/js/leak.js", "/static/js/leak.js?v=1"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "secret" not in response.text
    assert client.get("/static/js/api.js").status_code == 200


@pytest.mark.parametrize("cursor", ["2147483647", "2147483648", "9999999999"])
def test_a_cursor_past_the_largest_id_is_refused_or_empty_never_a_server_error(
    browser: TestClient, cursor: str
) -> None:
    # Ten digits pass the cursor's pattern; past INTEGER, PostgreSQL failed the comparison (a 500).
    listed = browser.get("/api/documents", params={"cursor": cursor})
    assert listed.status_code == (200 if cursor == "2147483647" else 422), listed.text
    page = browser.get("/documents", params={"cursor": cursor}, headers={"Accept": "text/html"})
    assert page.status_code == 200
