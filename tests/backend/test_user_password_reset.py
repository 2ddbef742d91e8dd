"""An admin resets a user's password (PUT /api/users/{id}/password): the new one works, the old one
does not, and every session and token the user had is ended; only admins may, and the password rules hold."""

from __future__ import annotations

import secrets

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.deps import CSRF_HEADER
from tests.backend.conftest import PASSWORD, Actors, bearer


def _user_id(actors: Actors, username: str) -> int:
    users = actors.client.get("/api/users", headers=actors.admin).json()
    return int(next(u["id"] for u in users if u["username"] == username))


def _login(client: TestClient, username: str, password: str) -> int:
    return client.post("/api/auth/login", json={"username": username, "password": password}).status_code


def test_a_reset_password_works_and_ends_every_session_and_token_of_the_user(actors: Actors) -> None:
    client = actors.client
    browser = TestClient(client.app)
    assert _login(browser, "erika", PASSWORD) == 200
    erika = _user_id(actors, "erika")
    new_password = "reset by the admin " + secrets.token_hex(4)
    reset = client.put(f"/api/users/{erika}/password", headers=actors.admin, json={"password": new_password})
    assert reset.status_code == 204, reset.text
    # Her token and her browser session are both over; the admin's own token still works.
    assert client.get("/api/auth/me", headers=actors.archivist).status_code == 401
    assert browser.get("/api/auth/me").status_code == 401
    assert client.get("/api/auth/me", headers=actors.admin).status_code == 200
    assert _login(client, "erika", PASSWORD) == 401
    assert _login(client, "erika", new_password) == 200


def test_an_admin_resetting_their_own_password_stays_logged_in_here_only(actors: Actors) -> None:
    client = actors.client
    elsewhere = bearer(client, "admin")
    admin = _user_id(actors, "admin")
    reset = client.put(f"/api/users/{admin}/password", headers=actors.admin, json={"password": "a new admin secret"})
    assert reset.status_code == 204
    assert client.get("/api/auth/me", headers=actors.admin).status_code == 200
    assert client.get("/api/auth/me", headers=elsewhere).status_code == 401


def test_a_session_resets_with_the_csrf_token_only(actors: Actors) -> None:
    browser = TestClient(actors.client.app)
    logged_in = browser.post("/api/auth/login", json={"username": "admin", "password": PASSWORD})
    csrf = logged_in.json()["csrfToken"]
    erika = _user_id(actors, "erika")
    body = {"password": "another fine secret"}
    assert browser.put(f"/api/users/{erika}/password", json=body).json()["code"] == "CSRF_FAILED"
    assert browser.put(f"/api/users/{erika}/password", json=body, headers={CSRF_HEADER: csrf}).status_code == 204


def test_only_an_admin_may_reset_and_an_unknown_user_is_named(actors: Actors) -> None:
    client = actors.client
    admin = _user_id(actors, "admin")
    refused = client.put(f"/api/users/{admin}/password", headers=actors.archivist, json={"password": "x" * 12})
    assert (refused.status_code, refused.json()["code"]) == (403, "FORBIDDEN")
    assert _login(client, "admin", PASSWORD) == 200
    missing = client.put("/api/users/99999/password", headers=actors.admin, json={"password": "x" * 12})
    assert (missing.status_code, missing.json()["code"]) == (404, "USER_NOT_FOUND")


TEXT = st.characters(codec="utf-8")  # no lone surrogates: JSON could not carry them


# The fixture's app is the same for every example, and each example changes nothing: that is the claim.
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(TEXT, max_size=9), st.text(TEXT, min_size=257, max_size=300)))
def test_a_password_outside_the_rules_is_refused_and_changes_nothing(actors: Actors, password: str) -> None:
    client = actors.client
    erika = _user_id(actors, "erika")
    refused = client.put(f"/api/users/{erika}/password", headers=actors.admin, json={"password": password})
    assert refused.status_code == 422 and refused.json()["code"] == "INVALID_REQUEST"
    assert client.get("/api/auth/me", headers=actors.archivist).status_code == 200
