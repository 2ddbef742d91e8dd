"""Admin -> Users and one's own account in the real browser: add a user, change the role, reset a
password (their sessions end), deactivate and reactivate; the last admin is refused with its message;
an archivist cannot open the page (server-side); a person changes their own password."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from tests.support.processes import ADMIN, PASSWORD, Backend, Processes, backend_env
from tests.web.support import (
    LANGUAGES,
    WIDTHS,
    Browsing,
    LiveSystem,
    audit_page,
    check_accessibility,
)


def unique_name(prefix: str = "nutzer") -> str:
    return f"{prefix}.{secrets.token_hex(4)}"


def login_status(url: str, username: str, password: str) -> int:
    return httpx.post(f"{url}/api/auth/token", data={"username": username, "password": password}).status_code


def token_of(url: str, username: str, password: str) -> dict[str, str]:
    made = httpx.post(f"{url}/api/auth/token", data={"username": username, "password": password})
    assert made.status_code == 200, made.text
    return {"Authorization": f"Bearer {made.json()['accessToken']}"}


@contextmanager
def page_as(browser: Browser, url: str, username: str, password: str, width: str = "desktop") -> Iterator[Page]:
    """A page logged in as any user (not only the live system's two), in German; script errors fail."""
    w, h = WIDTHS[width]
    context = browser.new_context(base_url=url, viewport={"width": w, "height": h}, has_touch=width == "tablet")
    context.set_default_timeout(15_000)
    try:
        assert context.request.post("/api/auth/login", data={"username": username, "password": password}).ok
        context.add_cookies([{"name": "archiv_lang", "value": "de", "url": url}])
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        yield page
        assert not errors, f"script errors on {page.url}: {errors}"
    finally:
        context.close()


def row(page: Page, username: str) -> Locator:
    return page.locator(f'tr[data-username="{username}"]')


def test_an_admin_adds_a_user_changes_the_role_resets_the_password_and_deactivates(
    browsing: Browsing, live: LiveSystem
) -> None:
    name, password = unique_name(), "first-pass-" + secrets.token_hex(4)
    with browsing.page("admin", "de") as page:
        page.goto("/admin/users")
        expect(page.get_by_role("heading", level=1)).to_have_text("Benutzer")
        form = page.locator("#users-create-form")
        form.get_by_label("Benutzername").fill(name.upper() + " ")  # stored trimmed and in small letters
        form.get_by_label("Passwort (mindestens 10 Zeichen)").fill(password)
        form.get_by_label("Passwort wiederholen").fill(password)
        form.get_by_label("Rolle").select_option(label="Archivar/in")
        form.get_by_role("button", name="Benutzer anlegen").click()
        expect(page.locator("#notices .notice--success")).to_have_text(re.compile(f"{name} kann sich jetzt anmelden"))
        expect(row(page, name)).to_contain_text("Archivar/in")
        expect(row(page, name)).to_contain_text("Aktiv")
        expect(form.get_by_label("Benutzername")).to_have_value("")
        assert login_status(live.url, name, password) == 200

        # The same name again: its message, and what was typed stays.
        form.get_by_label("Benutzername").fill(name)
        form.get_by_label("Passwort (mindestens 10 Zeichen)").fill(password)
        form.get_by_label("Passwort wiederholen").fill(password)
        form.get_by_role("button", name="Benutzer anlegen").click()
        expect(page.locator("#notices .notice--error")).to_have_text(
            re.compile("Es gibt schon jemanden mit diesem Benutzernamen")
        )
        expect(form.get_by_label("Benutzername")).to_have_value(name)

        page.get_by_role("button", name=f"Zum Admin machen ({name})").click()
        expect(row(page, name).locator("td").first).to_have_text("Admin")
        # The button turned into its opposite and kept the focus.
        expect(page.get_by_role("button", name=f"Zum Archivar/zur Archivarin machen ({name})")).to_be_focused()
        with live.api() as client:
            listed = {u["username"]: u for u in client.get("/api/users").json()}
        assert listed[name]["role"] == "admin"

        # Reset by keyboard: the dialog, a mismatch shown inside it, then the new password.
        their_token = token_of(live.url, name, password)
        reset_button = page.get_by_role("button", name=f"Passwort zurücksetzen ({name})")
        reset_button.focus()
        page.keyboard.press("Enter")
        dialog = page.get_by_role("dialog", name=f"Neues Passwort für {name}")
        expect(dialog).to_be_visible()
        new_password = "second-pass-" + secrets.token_hex(4)
        expect(dialog.get_by_label("Passwort (mindestens 10 Zeichen)")).to_be_focused()
        page.keyboard.type(new_password)
        page.keyboard.press("Tab")
        page.keyboard.type(new_password + "x")
        page.keyboard.press("Enter")
        expect(dialog.get_by_role("alert")).to_have_text("Die beiden Passwörter stimmen nicht überein.")
        expect(dialog.get_by_label("Passwort (mindestens 10 Zeichen)")).to_have_value(new_password)
        dialog.get_by_label("Passwort wiederholen").fill(new_password)
        dialog.get_by_label("Passwort wiederholen").press("Enter")
        expect(dialog).to_be_hidden()
        expect(page.locator("#notices .notice--success")).to_contain_text(f"{name} hat ein neues Passwort")
        expect(reset_button).to_be_focused()
        assert httpx.get(f"{live.url}/api/auth/me", headers=their_token).status_code == 401
        assert login_status(live.url, name, password) == 401
        assert login_status(live.url, name, new_password) == 200

        # Deactivate (confirmed in a dialog), then reactivate.
        page.get_by_role("button", name=f"Deaktivieren ({name})").click()
        confirm = page.get_by_role("dialog", name=f"{name} deaktivieren?")
        confirm.get_by_role("button", name="Abbrechen").click()
        expect(confirm).to_be_hidden()
        expect(row(page, name)).to_contain_text("Aktiv")
        page.get_by_role("button", name=f"Deaktivieren ({name})").click()
        confirm.get_by_role("button", name="Deaktivieren").click()
        expect(row(page, name)).to_contain_text("Deaktiviert")
        expect(page.get_by_role("button", name=f"Wieder aktivieren ({name})")).to_be_focused()
        assert login_status(live.url, name, new_password) == 401
        page.get_by_role("button", name=f"Wieder aktivieren ({name})").click()
        expect(row(page, name)).to_contain_text("Aktiv")
        expect(page.locator("#notices .notice--success")).to_contain_text(f"{name} kann sich wieder anmelden")
        assert login_status(live.url, name, new_password) == 200
        # Back to an archivist, so no other test finds an extra admin.
        page.get_by_role("button", name=f"Zum Archivar/zur Archivarin machen ({name})").click()
        expect(row(page, name).locator("td").first).to_have_text("Archivar/in")


def test_the_last_admin_is_refused_with_its_message(browsing: Browsing, live: LiveSystem, tmp_path: Path) -> None:
    # An archive of its own: in the shared one, other tests may have made admins.
    processes = Processes(tmp_path)
    try:
        backend = Backend(processes, backend_env(tmp_path, f"sqlite:///{tmp_path / 'own.db'}", live.ocr_url)).start()
        with page_as(browsing.browser, backend.url, ADMIN, PASSWORD) as page:
            page.goto("/admin/users")
            page.get_by_role("button", name=f"Zum Archivar/zur Archivarin machen ({ADMIN})").click()
            notice = page.locator("#notices .notice--error")
            expect(notice).to_have_text(
                re.compile("Das ist das letzte Admin-Konto. Bitte mach zuerst jemand anderen zum Admin.")
            )
            page.wait_for_timeout(1000)  # not dismissed on its own
            expect(notice).to_be_visible()
            page.get_by_role("button", name=f"Deaktivieren ({ADMIN})").click()
            page.get_by_role("dialog").get_by_role("button", name="Deaktivieren").click()
            expect(page.locator("#notices .notice--error")).to_have_text(re.compile("Das ist das letzte Admin-Konto"))
            expect(row(page, ADMIN)).to_contain_text("Aktiv")
            expect(row(page, ADMIN).locator("td").first).to_have_text("Admin")
    finally:
        processes.kill_all()


def test_an_archivist_gets_a_403_page_on_admin_users(browsing: Browsing) -> None:
    with browsing.page("archivist", "de") as page:
        response = page.goto("/admin/users")
        assert response is not None and response.status == 403
        expect(page.get_by_role("alert")).to_have_text(re.compile("Das darfst du nicht"))
        assert page.locator("#users-create-form").count() == 0


def test_a_person_changes_their_own_password_on_the_account_page(browsing: Browsing, live: LiveSystem) -> None:
    name, password = unique_name("konto"), "own-pass-" + secrets.token_hex(4)
    with live.api() as client:
        made = client.post("/api/users", json={"username": name, "password": password, "role": "archivist"})
        assert made.status_code == 201, made.text
    elsewhere = token_of(live.url, name, password)
    with page_as(browsing.browser, live.url, name, password) as page:
        page.goto("/search")
        page.get_by_role("link", name="Konto").click()
        expect(page).to_have_url(re.compile(r"/account$"))
        expect(page.get_by_role("heading", level=1)).to_have_text("Dein Konto")
        expect(page.locator(".account-facts")).to_contain_text(name)
        new_password = "changed-pass-" + secrets.token_hex(4)
        page.get_by_label("Bisheriges Passwort").fill("not-my-password")
        page.get_by_label("Neues Passwort (mindestens 10 Zeichen)").fill(new_password)
        page.get_by_label("Neues Passwort wiederholen").fill(new_password)
        page.get_by_role("button", name="Passwort ändern").click()
        expect(page.locator("#notices .notice--error")).to_have_text(
            re.compile("Das bisherige Passwort stimmt nicht. Bitte gib es noch einmal ein.")
        )
        expect(page.get_by_label("Neues Passwort (mindestens 10 Zeichen)")).to_have_value(new_password)
        page.get_by_label("Bisheriges Passwort").fill(password)
        page.get_by_role("button", name="Passwort ändern").click()
        expect(page.locator("#notices .notice--success")).to_contain_text("Dein Passwort ist geändert")
        expect(page.get_by_label("Bisheriges Passwort")).to_have_value("")
        # This session stays, every other one has ended; the new password is the one that works.
        page.reload()
        expect(page.get_by_role("heading", level=1)).to_have_text("Dein Konto")
        assert httpx.get(f"{live.url}/api/auth/me", headers=elsewhere).status_code == 401
        assert login_status(live.url, name, password) == 401
        assert login_status(live.url, name, new_password) == 200


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_users_and_account_pages_are_accessible_in_every_language_and_width(
    browsing: Browsing, language: str, width: str
) -> None:
    with browsing.page("admin", language, width) as page:
        page.goto("/admin/users")
        audit_page(page, "users", "users", language, width)
        page.locator("button[data-action=reset]").first.click()
        expect(page.locator("#reset-dialog")).to_be_visible()
        check_accessibility(page, f"users reset dialog {language} {width}")
        page.keyboard.press("Escape")
        expect(page.locator("#reset-dialog")).to_be_hidden()
        page.goto("/account")
        audit_page(page, "account", "account", language, width)
