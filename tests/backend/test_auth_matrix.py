"""Every API route × anonymous / archivist / admin / a session with a wrong CSRF token."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.deps import CSRF_HEADER
from backend.users.models import Role
from tests.backend.conftest import PASSWORD, Actors, AppFactory, FakeClock, add_user, bearer

ANONYMOUS, USER, ADMIN = "anonymous", "user", "admin"
# The codes of a refusal by authentication, role or CSRF check (others, e.g. 404, mean it got past them).
DENIED = {"NOT_AUTHENTICATED", "FORBIDDEN", "CSRF_FAILED"}

# (method, path, who may call it, request arguments); ids of documents/lines that do not
# exist are fine: authentication and roles are checked before anything is looked up.
ROUTES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("POST", "/api/setup", ANONYMOUS, {"json": {"token": "t", "username": "x", "password": "p" * 12}}),
    ("POST", "/api/auth/token", ANONYMOUS, {"data": {"username": "nobody", "password": "wrong password"}}),
    ("POST", "/api/auth/login", ANONYMOUS, {"json": {"username": "nobody", "password": "wrong password"}}),
    ("POST", "/api/auth/logout", USER, {}),
    ("GET", "/api/auth/me", USER, {}),
    ("PUT", "/api/auth/language", USER, {"json": {"language": "es"}}),
    ("GET", "/api/users", ADMIN, {}),
    ("POST", "/api/users", ADMIN, {"json": {"username": "new", "password": "p" * 12, "role": "archivist"}}),
    ("PATCH", "/api/users/{user_id}", ADMIN, {"json": {"role": "archivist"}}),
    ("PUT", "/api/users/{user_id}/password", ADMIN, {"json": {"password": "p" * 12}}),
    ("POST", "/api/auth/password", USER, {"json": {"currentPassword": "wrong password", "newPassword": "p" * 12}}),
    ("POST", "/api/documents", USER, {"files": {"file": ("a.txt", b"text", "text/plain")}, "data": {"title": "t"}}),
    ("GET", "/api/documents", USER, {}),
    ("GET", "/api/documents/{document_id}", USER, {}),
    ("DELETE", "/api/documents/{document_id}", USER, {}),
    ("GET", "/api/trash", ADMIN, {}),
    ("POST", "/api/trash/{document_id}/restore", ADMIN, {}),
    ("DELETE", "/api/trash/{document_id}", ADMIN, {}),
    ("GET", "/api/documents/{document_id}/lines", USER, {}),
    ("GET", "/api/documents/{document_id}/pages", USER, {}),
    ("GET", "/api/documents/{document_id}/pages/{number}/image", USER, {}),
    ("GET", "/api/documents/{document_id}/pages/{number}/thumbnail", USER, {}),
    ("PUT", "/api/documents/{document_id}/pages/{number}/review", USER, {}),
    ("DELETE", "/api/documents/{document_id}/pages/{number}/review", USER, {}),
    ("GET", "/api/documents/{document_id}/discarded-corrections", USER, {}),
    ("PATCH", "/api/lines/{line_id}", USER, {"json": {"text": "x", "version": 1}}),
    ("GET", "/api/lines/{line_id}/history", USER, {}),
    ("POST", "/api/documents/{document_id}/ocr", USER, {}),
    ("POST", "/api/ocr/batches", USER, {"json": {"documentIds": [999]}}),
    ("GET", "/api/ocr/jobs/{job_id}", USER, {}),
    ("GET", "/api/ocr/jobs/{job_id}/events", USER, {}),
    ("POST", "/api/ocr/jobs/{job_id}/cancel", USER, {}),
    ("GET", "/api/ocr/batches/{batch_id}", USER, {}),
    ("GET", "/api/ocr/models", USER, {}),
    ("GET", "/api/documents/{document_id}/ocr-job", USER, {}),
    ("POST", "/api/ocr/batches/{batch_id}/cancel", USER, {}),
    ("POST", "/api/ocr/batches/{batch_id}/retry", USER, {}),
    ("GET", "/api/documents/{document_id}/export", USER, {"params": {"format": "txt"}}),
    ("GET", "/api/exports", USER, {"params": {"ids": [999], "format": "page"}}),
    ("POST", "/api/imports", USER, {"files": {"file": ("a.zip", b"not a zip", "application/zip")}}),
    ("GET", "/api/writers", USER, {}),
    ("GET", "/api/writers/{slug}", USER, {}),
    ("GET", "/api/search", USER, {"params": {"q": "Mutter"}}),
    ("GET", "/api/admin/training", ADMIN, {}),
    ("POST", "/api/admin/training/{kind}", ADMIN, {}),
    ("GET", "/api/admin/training/runs", ADMIN, {}),
    ("GET", "/api/admin/training/runs/{run_id}", ADMIN, {}),
    ("POST", "/api/admin/training/runs/{run_id}/cancel", ADMIN, {}),
    ("POST", "/api/admin/training/runs/{run_id}/adopt", ADMIN, {}),
]


def _url(path: str) -> str:
    for name in ("document_id", "line_id", "user_id", "job_id", "batch_id", "number", "slug", "run_id"):
        path = path.replace("{" + name + "}", "999")
    # Training is off in these tests (no token): an admin's start is refused with 503, never run.
    return path.replace("{kind}", "recognition")


def test_the_matrix_covers_every_api_route(actors: Actors) -> None:
    paths = actors.client.app.openapi()["paths"]  # type: ignore[attr-defined]
    served = {(method.upper(), path) for path, methods in paths.items() for method in methods}
    assert served == {(method, path) for method, path, _, _ in ROUTES}


def _call(client: TestClient, method: str, path: str, headers: dict[str, str], args: dict[str, Any]) -> tuple[int, str]:
    response = client.request(method, _url(path), headers=headers, **args)
    body = response.json() if response.content else None
    return response.status_code, body.get("code", "") if isinstance(body, dict) else ""


@pytest.fixture
def actors(app_factory: AppFactory, clock: FakeClock) -> Actors:
    """As conftest's, with one attempt at the (absent) OCR service: the routes that call it answer
    503 at once instead of after its back-offs (34 s for the models route's five calls), and
    which caller may call is all this module asks."""
    client = app_factory(clock=clock, ocr_attempts=1, ocr_backoff_s=0)
    add_user(client, "admin", Role.ADMIN)
    add_user(client, "erika", Role.ARCHIVIST)
    return Actors(client, bearer(client, "admin"), bearer(client, "erika"))


@pytest.mark.parametrize(("method", "path", "who", "args"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_route_enforces_its_role_for_each_kind_of_caller(
    actors: Actors, method: str, path: str, who: str, args: dict[str, Any]
) -> None:
    client = actors.client
    anonymous = _call(client, method, path, {}, args)
    archivist = _call(client, method, path, actors.archivist, args)
    admin = _call(client, method, path, actors.admin, args)
    if who == ANONYMOUS:
        assert anonymous[1] not in DENIED
        return
    assert anonymous == (401, "NOT_AUTHENTICATED")
    if who == ADMIN:
        assert archivist == (403, "FORBIDDEN")
    else:
        assert archivist[1] not in DENIED
    assert admin[1] not in DENIED

    # The same route from a browser session: reading needs no CSRF token, changing needs the right one.
    browser = TestClient(client.app)
    login = browser.post("/api/auth/login", json={"username": "admin", "password": PASSWORD})
    assert login.status_code == 200
    for wrong in ({}, {CSRF_HEADER: "forged"}):
        status, code = _call(browser, method, path, wrong, args)
        if method == "GET":
            assert code not in DENIED
        else:
            assert (status, code) == (403, "CSRF_FAILED")
    assert _call(browser, method, path, {CSRF_HEADER: login.json()["csrfToken"]}, args)[1] not in DENIED
