"""Hostile input on every route: never a 5xx; every refusal is a 4xx with a code from the enum."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from backend.errors import ErrorCode
from tests.backend.conftest import Actors
from tests.backend.documents import make_document

CODES = {code.value for code in ErrorCode}
NASTY = [
    "\x00",
    "a\x00b",
    "\ud800",
    "\udfff x",
    "%00",
    "../../etc/passwd",
    "' OR 1=1 --",
    "\u202e",
    "𝔘𝔫𝔦",
    "9" * 30,
    "-1",
    "0",
    "1e309",
    "NaN",
    " ",
    "",
    "x" * 6000,
]
# Lone surrogates only travel inside JSON escapes; elsewhere httpx cannot encode them.
printable = st.text(max_size=40) | st.sampled_from([n for n in NASTY if not any("\ud800" <= c <= "\udfff" for c in n)])
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.sampled_from(NASTY)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
# Any text as one path segment, percent-encoded. "", ".", ".." and "/" (the server decodes %2F
# before routing) would name another path.
ids = st.integers(min_value=-(2**70), max_value=2**70).map(str) | printable.filter(
    lambda s: s not in {"", ".", ".."} and "/" not in s
)

INT = TypeAdapter(int)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _assert_clear(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert body["code"] in CODES and isinstance(body["message"], str) and body["message"]


def _body(value: Any, field_values: dict[str, Any]) -> bytes:
    if isinstance(value, dict):
        value = {**field_values, **value}
    return json.dumps(value).encode()


JSON_ROUTES = [
    ("POST", "/api/setup", {"token": "t", "username": "u", "password": "p" * 12}),
    ("POST", "/api/auth/login", {"username": "u", "password": "p" * 12}),
    ("POST", "/api/users", {"username": "u", "password": "p" * 12, "role": "archivist"}),
    ("PATCH", "/api/lines/1", {"text": "t", "version": 1}),
    ("PATCH", "/api/users/1", {"isActive": True}),
    ("POST", "/api/auth/password", {"currentPassword": "p" * 12, "newPassword": "q" * 12}),
    ("POST", "/api/documents/1/ocr", {"model": "tiny", "discardCorrections": True}),
    ("POST", "/api/ocr/batches", {"documentIds": [1], "model": "tiny", "discardCorrections": False}),
    ("POST", "/api/ocr/batches/1/retry", {"includeCancelled": True}),
]


@pytest.mark.parametrize(("method", "path", "valid"), JSON_ROUTES, ids=[p for _, p, _ in JSON_ROUTES])
@FUZZ
@given(value=json_values, drop=st.booleans())
def test_json_bodies(actors: Actors, method: str, path: str, valid: dict[str, Any], value: Any, drop: bool) -> None:
    base = {} if drop else {k: v for k, v in valid.items() if k != "role"}
    response = actors.client.request(
        method, path, headers={**actors.admin, "Content-Type": "application/json"}, content=_body(value, base)
    )
    _assert_clear(response)


@FUZZ
@given(raw=st.binary(max_size=200))
def test_raw_bytes_as_json(actors: Actors, raw: bytes) -> None:
    for method, path, _ in JSON_ROUTES:
        response = actors.client.request(
            method, path, headers={**actors.admin, "Content-Type": "application/json"}, content=raw
        )
        _assert_clear(response)


PATH_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/documents/{}", None),
    ("DELETE", "/api/documents/{}", None),
    ("POST", "/api/trash/{}/restore", None),
    ("GET", "/api/documents/{}/lines", None),
    ("GET", "/api/documents/{}/pages", None),
    ("GET", "/api/documents/{}/discarded-corrections", None),
    ("GET", "/api/lines/{}/history", None),
    ("PATCH", "/api/lines/{}", {"text": "x", "version": 1}),
    ("PATCH", "/api/users/{}", {"isActive": True}),
    ("POST", "/api/documents/{}/ocr", None),
    ("GET", "/api/ocr/jobs/{}", None),
    ("GET", "/api/ocr/jobs/{}/events", None),
    ("GET", "/api/ocr/batches/{}", None),
    ("POST", "/api/ocr/batches/{}/retry", None),
    ("POST", "/api/ocr/jobs/{}/cancel", None),
    ("POST", "/api/ocr/batches/{}/cancel", None),
]


def _as_number(identifier: str) -> int | None:
    """The number the framework reads in a path segment ("+3" and " 3" are 3; "¹" and "３" are no
    number, though str.isdigit() says they are digits)."""
    try:
        return INT.validate_python(identifier)
    except ValidationError:
        return None


@FUZZ
@given(identifier=ids)
def test_path_ids(actors: Actors, identifier: str) -> None:
    users = {u["id"] for u in actors.client.get("/api/users", headers=actors.admin).json()}
    for method, template, body in PATH_ROUTES:
        response = actors.client.request(
            method, template.format(quote(identifier, safe="")), headers=actors.admin, json=body
        )
        _assert_clear(response)
        number = _as_number(identifier)
        if number is not None and 1 <= number < 2**31:
            existing_user = template.startswith("/api/users") and number in users
            assert response.status_code == (200 if existing_user else 404)
        else:
            assert (response.status_code, response.json()["code"]) == (422, "INVALID_REQUEST")


@FUZZ
@given(
    params=st.dictionaries(
        st.sampled_from(["writer", "status", "dateFrom", "dateTo", "title", "cursor", "limit", "x"]),
        printable,
        max_size=4,
    )
)
def test_list_query_parameters(actors: Actors, params: dict[str, str]) -> None:
    _assert_clear(actors.client.get("/api/documents", headers=actors.archivist, params=params))


@FUZZ
@given(
    fields=st.dictionaries(st.sampled_from(["title", "writer", "date", "extra"]), printable, max_size=4),
    filename=printable,
    content=st.binary(max_size=300) | st.sampled_from([make_document("png", 1), make_document("pdf", 2)]),
)
def test_upload_forms(actors: Actors, fields: dict[str, str], filename: str, content: bytes) -> None:
    response = actors.client.post(
        "/api/documents", headers=actors.archivist, files={"file": (filename or "f", content)}, data=fields
    )
    _assert_clear(response)


@FUZZ
@given(username=printable, password=printable)
def test_token_form(actors: Actors, username: str, password: str) -> None:
    _assert_clear(actors.client.post("/api/auth/token", data={"username": username, "password": password}))


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer " + "x" * 5000},
        {"Authorization": "bearer \t "},
        {"Cookie": "archiv_session=" + "%00" * 10},
    ],
)
def test_malformed_credentials_are_401(actors: Actors, headers: dict[str, str]) -> None:
    response = actors.client.get("/api/auth/me", headers=headers)
    assert (response.status_code, response.json()["code"]) == (401, "NOT_AUTHENTICATED")


def test_a_non_multipart_upload_is_415(actors: Actors) -> None:
    response = actors.client.post("/api/documents", headers=actors.archivist, json={"title": "x"})
    assert (response.status_code, response.json()["code"]) == (415, "UNSUPPORTED_MEDIA_TYPE")
