"""First admin, logins, sessions with CSRF, revocation, throttling, roles, no password in any log."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select

from backend.deps import CSRF_HEADER, SESSION_COOKIE
from backend.users.bootstrap import bootstrap_first_admin
from backend.users.models import Credential, Role, User
from backend.users.service import Users
from backend.users.throttle import LoginThrottle
from tests.backend.conftest import PASSWORD, Actors, AppFactory, FakeClock, add_user, bearer, services_of

ROOT = Path(__file__).resolve().parents[2]


def test_first_start_prints_a_setup_token_that_creates_one_admin_once(
    app_factory: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    client = app_factory()
    token = services_of(client).setup.token
    assert token is not None and token in capsys.readouterr().out
    wrong = client.post("/api/setup", json={"token": "x" + token, "username": "ada", "password": PASSWORD})
    assert (wrong.status_code, wrong.json()["code"]) == (403, "SETUP_TOKEN_INVALID")
    made = client.post("/api/setup", json={"token": token, "username": "Ada", "password": PASSWORD})
    assert made.status_code == 201
    assert (made.json()["username"], made.json()["role"]) == ("ada", "admin")
    again = client.post("/api/setup", json={"token": token, "username": "bob", "password": PASSWORD})
    assert (again.status_code, again.json()["code"]) == (409, "SETUP_DONE")
    assert services_of(client).setup.token is None


def test_the_setup_link_opens_a_page_that_never_sees_the_token(
    app_factory: AppFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    client = app_factory()
    token = services_of(client).setup.token
    assert f"http://127.0.0.1:8000/setup#token={token}" in capsys.readouterr().out
    page = client.get("/setup")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # The page's own script reads the token from the fragment; the server never sees it.
    assert str(token) not in page.text and "/static/js/setup.js" in page.text
    assert "/api/setup" in client.get("/static/js/setup.js").text
    # Only the UI's own files run: no inline script can (an injected one would not either).
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy and "unsafe-inline" not in policy
    assert page.headers["referrer-policy"] == "no-referrer"


def test_a_setup_that_fails_keeps_the_token_and_two_racing_setups_make_one_admin(app_factory: AppFactory) -> None:
    client = app_factory()
    token = str(services_of(client).setup.token)
    short = client.post("/api/setup", json={"token": token, "username": "ada", "password": "short"})
    assert (short.status_code, short.json()["code"]) == (422, "INVALID_REQUEST")
    barrier = threading.Barrier(4)
    outcomes: list[int] = []

    def attempt(n: int) -> None:
        barrier.wait()
        response = client.post("/api/setup", json={"token": token, "username": f"admin{n}", "password": PASSWORD})
        outcomes.append(response.status_code)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(201) == 1 and set(outcomes) <= {201, 403, 409}
    with services_of(client).db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 1


def test_a_second_process_that_finds_the_admin_made_meanwhile_starts_normally(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = app_factory(admin_username="root", admin_password="a long admin secret")
    second = services_of(app_factory())
    second.settings.admin_username, second.settings.admin_password = "root", SecretStr("a long admin secret")
    # As if it had counted the users just before the first process committed its admin.
    monkeypatch.setattr(second.users, "count", lambda _session: 0)
    bootstrap_first_admin(second, announce=False)
    assert len(first.get("/api/users", headers=bearer(first, "root", "a long admin secret")).json()) == 1


def test_admin_settings_create_the_first_admin_unattended(app_factory: AppFactory) -> None:
    client = app_factory(admin_username="Root", admin_password="a long admin secret")
    assert services_of(client).setup.token is None
    me = client.get("/api/auth/me", headers=bearer(client, "root", "a long admin secret"))
    assert me.json()["role"] == "admin"


def test_a_bearer_token_is_stored_only_as_a_hash_and_logout_revokes_it(actors: Actors) -> None:
    client = actors.client
    token = actors.archivist["Authorization"].removeprefix("Bearer ")
    assert client.get("/api/auth/me", headers=actors.archivist).json()["username"] == "erika"
    with services_of(client).db.sessions() as session:
        hashes = list(session.scalars(select(Credential.token_hash)))
    assert token not in hashes and all(len(h) == 64 for h in hashes)
    assert client.post("/api/auth/logout", headers=actors.archivist).status_code == 204
    gone = client.get("/api/auth/me", headers=actors.archivist)
    assert (gone.status_code, gone.json()["code"]) == (401, "NOT_AUTHENTICATED")
    assert client.get("/api/auth/me", headers=actors.admin).status_code == 200  # other tokens live on


def test_a_token_expires_after_its_lifetime(app_factory: AppFactory, clock: FakeClock) -> None:
    client = app_factory(clock=clock, token_ttl_hours=1)
    add_user(client, "erika", Role.ARCHIVIST)
    headers = bearer(client, "erika")
    clock.advance(3599)
    assert client.get("/api/auth/me", headers=headers).status_code == 200
    clock.advance(2)
    assert client.get("/api/auth/me", headers=headers).status_code == 401


def test_a_deactivated_user_is_logged_out_everywhere(actors: Actors) -> None:
    services = services_of(actors.client)
    with services.db.sessions() as session:
        session.execute(User.__table__.update().where(User.username == "erika").values(is_active=False))
        session.commit()
    assert actors.client.get("/api/auth/me", headers=actors.archivist).status_code == 401
    refused = actors.client.post("/api/auth/token", data={"username": "erika", "password": PASSWORD})
    assert refused.json()["code"] == "INVALID_CREDENTIALS"


def _session_login(client: TestClient, username: str = "erika") -> str:
    response = client.post("/api/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return str(response.json()["csrfToken"])


def test_the_session_cookie_is_httponly_and_samesite_lax(actors: Actors) -> None:
    response = actors.client.post("/api/auth/login", json={"username": "erika", "password": PASSWORD})
    cookie = response.headers["set-cookie"].lower()
    assert f"{SESSION_COOKIE}=" in cookie
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie


def test_the_session_cookie_is_secure_behind_https(app_factory: AppFactory) -> None:
    client = app_factory(public_url="https://archiv.example.org")
    add_user(client, "erika", Role.ARCHIVIST)
    response = client.post("/api/auth/login", json={"username": "erika", "password": PASSWORD})
    assert "secure" in response.headers["set-cookie"].lower()


def test_a_state_change_with_the_cookie_needs_the_csrf_token(actors: Actors) -> None:
    client = actors.client
    csrf = _session_login(client)
    assert client.get("/api/auth/me").status_code == 200  # reading needs no CSRF token
    for headers in ({}, {CSRF_HEADER: ""}, {CSRF_HEADER: csrf + "x"}, {CSRF_HEADER: _other_sessions_csrf(actors)}):
        refused = client.post("/api/auth/logout", headers=headers)
        assert (refused.status_code, refused.json()["code"]) == (403, "CSRF_FAILED")
    assert client.post("/api/auth/logout", headers={CSRF_HEADER: csrf}).status_code == 204
    assert client.get("/api/auth/me").status_code == 401


def _other_sessions_csrf(actors: Actors) -> str:
    other = TestClient(actors.client.app)
    return _session_login(other, "admin")


def test_roles_are_enforced_on_the_server(actors: Actors) -> None:
    client = actors.client
    forbidden = client.get("/api/users", headers=actors.archivist)
    assert (forbidden.status_code, forbidden.json()["code"]) == (403, "FORBIDDEN")
    made = client.post(
        "/api/users", headers=actors.admin, json={"username": "hans", "password": PASSWORD, "role": "archivist"}
    )
    assert made.status_code == 201
    twice = client.post(
        "/api/users", headers=actors.admin, json={"username": "HANS", "password": PASSWORD, "role": "admin"}
    )
    assert (twice.status_code, twice.json()["code"]) == (409, "USER_EXISTS")
    assert [u["username"] for u in client.get("/api/users", headers=actors.admin).json()] == ["admin", "erika", "hans"]


def _login_status(client: TestClient, username: str, password: str) -> tuple[int, str]:
    response = client.post("/api/auth/token", data={"username": username, "password": password})
    return response.status_code, response.json().get("code", "")


def test_failed_logins_are_slowed_down_per_user(actors: Actors, clock: FakeClock) -> None:
    client = actors.client
    for _ in range(5):
        assert _login_status(client, "erika", "wrong password") == (401, "INVALID_CREDENTIALS")
    assert _login_status(client, "erika", "wrong password") == (401, "INVALID_CREDENTIALS")  # the 6th: 1 s wait
    throttled = client.post("/api/auth/token", data={"username": "erika", "password": PASSWORD})
    assert (throttled.status_code, throttled.json()["code"]) == (429, "LOGIN_THROTTLED")
    assert throttled.headers["Retry-After"] == "1"
    clock.advance(1.5)
    assert _login_status(client, "Erika", PASSWORD) == (200, "")


def test_failed_logins_are_slowed_down_per_address_across_user_names(actors: Actors) -> None:
    client = actors.client
    for attempt in range(6):
        assert _login_status(client, f"guess{attempt}", "wrong password") == (401, "INVALID_CREDENTIALS")
    assert _login_status(client, "admin", PASSWORD) == (429, "LOGIN_THROTTLED")


@pytest.mark.parametrize("seed", range(40))
def test_throttle_waits_follow_the_doubling_schedule(seed: int) -> None:
    """Random failures, successes and pauses on a few keys, against a plain model of the rule."""
    rng = random.Random(seed)
    now = [0.0]
    free, base, cap, window = rng.randint(1, 5), rng.choice([0.5, 1.0, 2.0]), rng.choice([4.0, 30.0]), 60.0
    throttle = LoginThrottle(lambda: now[0], free_attempts=free, base_delay_s=base, max_delay_s=cap, window_s=window)
    failures: dict[str, tuple[int, float]] = {}  # key -> (count, time of the last failure)
    for _ in range(200):
        key = rng.choice(["user:a", "user:b", "address:x"])
        now[0] += rng.choice([0.0, 0.25, 1.0, 5.0, 70.0])
        count, last = failures.get(key, (0, now[0]))
        if now[0] - last > window:
            count = 0
        wait = last + min(cap, base * 2 ** (count - free - 1)) - now[0] if count > free else 0.0
        if wait > 0:
            with pytest.raises(Exception, match="Too many failed logins") as raised:
                throttle.check([key])
            assert raised.value.headers == {"Retry-After": str(int(-(-wait // 1)))}  # type: ignore[attr-defined]
            continue
        throttle.check([key])
        if rng.random() < 0.15:
            throttle.succeeded(key)
            failures.pop(key, None)
        else:
            throttle.failed([key])
            failures[key] = (count + 1, now[0])


def test_passwords_never_reach_the_logs_or_the_console(
    app_factory: AppFactory, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    secrets_used = ["first-admin-pw-1", "archivist-pw-22", "wrong-guess-pw-333", "x" * 300 + "too-long-pw"]
    client = app_factory(admin_username="root", admin_password="unattended-pw-0")
    headers = bearer(client, "root", "unattended-pw-0")
    client.post(
        "/api/users", headers=headers, json={"username": "erika", "password": secrets_used[1], "role": "archivist"}
    )
    client.post("/api/users", headers=headers, json={"username": "erika", "password": secrets_used[0], "role": "admin"})
    client.post("/api/users", headers=headers, json={"username": "short", "password": "tiny-pw", "role": "admin"})
    client.post("/api/auth/token", data={"username": "erika", "password": secrets_used[2]})
    client.post("/api/auth/login", json={"username": "erika", "password": secrets_used[3]})
    client.post("/api/auth/login", json={"username": "erika", "password": secrets_used[1]})
    out, err = capfd.readouterr()
    for password in [*secrets_used, "unattended-pw-0", "tiny-pw"]:
        assert password not in caplog.text
        assert password not in out + err


def test_create_user_command_reads_the_password_from_stdin(database_url: str, tmp_path: Path, db: object) -> None:
    env = {
        **os.environ,
        "APP_DATABASE_URL": database_url,
        "APP_ARGON2_TIME_COST": "1",
        "APP_ARGON2_MEMORY_KIB": "8192",
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "backend", "create-user", "Hans", "--role", "admin", "--password-stdin"]
    result = subprocess.run(
        command, input="cli password 1\n", env=env, capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert "cli password 1" not in result.stdout + result.stderr
    again = subprocess.run(
        command, input="cli password 1\n", env=env, capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert (again.returncode, "already a user" in again.stderr) == (1, True)


def test_deactivating_a_user_ends_their_tokens_and_sessions(actors: Actors) -> None:
    client = actors.client
    browser = TestClient(client.app)
    _session_login(browser)
    erika = next(u for u in client.get("/api/users", headers=actors.admin).json() if u["username"] == "erika")
    changed = client.patch(f"/api/users/{erika['id']}", headers=actors.admin, json={"isActive": False})
    assert changed.status_code == 200 and changed.json()["isActive"] is False
    assert client.get("/api/auth/me", headers=actors.archivist).status_code == 401
    assert browser.get("/api/auth/me").status_code == 401
    client.patch(f"/api/users/{erika['id']}", headers=actors.admin, json={"isActive": True, "role": "admin"})
    assert client.get("/api/auth/me", headers=actors.archivist).status_code == 401  # old tokens stay revoked
    assert client.get("/api/auth/me", headers=bearer(client, "erika")).json()["role"] == "admin"


def test_the_last_admin_can_be_neither_demoted_nor_deactivated(actors: Actors) -> None:
    client = actors.client
    users = {u["username"]: u["id"] for u in client.get("/api/users", headers=actors.admin).json()}
    for change in ({"role": "archivist"}, {"isActive": False}):
        refused = client.patch(f"/api/users/{users['admin']}", headers=actors.admin, json=change)
        assert (refused.status_code, refused.json()["code"]) == (409, "LAST_ADMIN")
    client.patch(f"/api/users/{users['erika']}", headers=actors.admin, json={"role": "admin"})
    assert (
        client.patch(f"/api/users/{users['admin']}", headers=actors.admin, json={"role": "archivist"}).status_code
        == 200
    )
    missing = client.patch("/api/users/99999", headers=actors.archivist, json={"role": "admin"})
    # Roles are read from the database on each request: erika's older token acts as an admin now.
    assert (missing.status_code, missing.json()["code"]) == (404, "USER_NOT_FOUND")


def test_changing_ones_password_ends_every_other_session(actors: Actors) -> None:
    client = actors.client
    other = bearer(client, "erika")
    wrong = client.post(
        "/api/auth/password",
        headers=actors.archivist,
        json={"currentPassword": "not my password", "newPassword": "a brand new secret"},
    )
    assert (wrong.status_code, wrong.json()["code"]) == (403, "WRONG_PASSWORD")
    changed = client.post(
        "/api/auth/password",
        headers=actors.archivist,
        json={"currentPassword": PASSWORD, "newPassword": "a brand new secret"},
    )
    assert changed.status_code == 204
    assert client.get("/api/auth/me", headers=actors.archivist).status_code == 200
    assert client.get("/api/auth/me", headers=other).status_code == 401
    assert _login_status(client, "erika", PASSWORD) == (401, "INVALID_CREDENTIALS")
    assert _login_status(client, "erika", "a brand new secret") == (200, "")


def test_password_hashes_run_one_per_slot_at_a_time() -> None:
    """With every slot busy, the next hash must wait: no more Argon2 runs at once than there are slots."""
    inside = threading.Semaphore(0)
    release = threading.Event()

    class BlockingHasher:
        def hash(self, password: str) -> str:
            return "h:" + password

        def verify(self, password: str, hashed: str) -> bool:
            inside.release()
            release.wait()
            return hashed == "h:" + password

    users = Users(BlockingHasher(), parallel_hashes=2)  # type: ignore[arg-type]
    threads = [threading.Thread(target=users._verify, args=(str(n), "h:x")) for n in range(2)]
    for thread in threads:
        thread.start()
    inside.acquire()
    inside.acquire()  # both hashes are running now
    assert users._slots.acquire(blocking=False) is False  # a third would have to wait
    release.set()
    for thread in threads:
        thread.join()
    assert users._slots.acquire(blocking=False) is True
