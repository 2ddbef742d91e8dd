"""The pages every visitor meets: login, first start, the language switch, logging out, errors."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.support.processes import Backend, Processes, backend_env, wait_for
from tests.web.support import (
    LANGUAGES,
    WIDTHS,
    Browsing,
    LiveSystem,
    audit_page,
    check_accessibility,
    screenshot,
)

HEADINGS = {"de": "Anmelden", "en": "Log in", "es": "Iniciar sesión"}


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("language", LANGUAGES)
def test_the_login_page_is_accessible_in_every_language_and_width(
    browsing: Browsing, language: str, width: str
) -> None:
    with browsing.page(None, language, width) as page:
        page.goto("/login")
        expect(page.locator("html")).to_have_attribute("lang", language)
        expect(page.get_by_role("heading", level=1)).to_have_text(HEADINGS[language])
        audit_page(page, "login", "login", language, width)


def test_a_page_asks_for_login_and_returns_to_where_the_person_was_going(browsing: Browsing) -> None:
    with browsing.page(None) as page:
        page.goto("/documents/424242?page=2")
        expect(page).to_have_url(re.compile(r"/login\?next=/documents/424242%3Fpage%3D2$"))
        username, password = browsing.live.archivist
        page.get_by_label("Benutzername").fill(username)
        page.get_by_label("Passwort").fill(password)
        page.get_by_label("Passwort").press("Enter")
        expect(page).to_have_url(re.compile(r"/documents/424242\?page=2$"))


def test_a_wrong_password_is_announced_calmly_and_stays(browsing: Browsing) -> None:
    with browsing.page(None, "de") as page:
        page.goto("/login")
        page.get_by_label("Benutzername").fill("nobody")
        page.get_by_label("Passwort").fill("wrong-password")
        page.get_by_role("button", name="Anmelden").click()
        notice = page.locator("#notices .notice--error")
        expect(notice).to_contain_text("Benutzername oder Passwort stimmen nicht")
        expect(page.locator("#notices")).to_have_attribute("aria-live", "polite")
        page.wait_for_timeout(1500)  # not dismissed on its own
        expect(notice).to_be_visible()
        check_accessibility(page, "login with an error")


def test_the_language_chosen_is_kept_for_the_person_across_logins(browsing: Browsing) -> None:
    with browsing.page("archivist", "de") as page:
        page.goto("/login?next=/login")  # logged in: sent on; any page with the layout will do
        page.goto("/no-such-page")
        expect(page.locator("html")).to_have_attribute("lang", "de")
        page.get_by_label("Sprache").select_option("es")
        expect(page.locator("html")).to_have_attribute("lang", "es")
    with browsing.context(None) as context:
        # A fresh browser, no language cookie: the login answer carries the person's choice.
        context.clear_cookies()
        page = context.new_page()
        page.goto("/login")
        expect(page.locator("html")).to_have_attribute("lang", "de")
        username, password = browsing.live.archivist
        page.get_by_label("Benutzername").fill(username)
        page.get_by_label("Passwort").fill(password)
        page.get_by_role("button", name="Anmelden").click()
        page.wait_for_url(re.compile(r"/documents"))
        page.goto("/login")  # redirected on, in the person's language
        page.goto("/no-such-page")
        expect(page.locator("html")).to_have_attribute("lang", "es")


def test_logging_out_ends_the_session_on_the_server(browsing: Browsing) -> None:
    with browsing.context("archivist") as context:
        page = context.new_page()
        page.goto("/setup")  # a page whose layout knows the person (until the documents page exists)
        session = next(c["value"] for c in context.cookies() if c["name"] == "archiv_session")
        page.get_by_role("button", name="Abmelden").click()
        page.wait_for_url(re.compile(r"/login$"))
        # The old cookie, replayed, opens nothing: the session was revoked, not only forgotten.
        replay = httpx.get(f"{browsing.live.url}/api/auth/me", cookies={"archiv_session": session})
        assert replay.status_code == 401


def test_the_first_start_link_creates_the_first_admin(browsing: Browsing, tmp_path: Path, live: LiveSystem) -> None:
    processes = Processes(tmp_path)
    env = backend_env(tmp_path, f"sqlite:///{tmp_path / 'fresh.db'}", live.ocr_url)
    del env["APP_ADMIN_USERNAME"], env["APP_ADMIN_PASSWORD"]
    try:
        backend = Backend(processes, env).start()
        link = wait_for(
            lambda: re.search(r"http://\S+/setup#token=\S+", backend.process.log.read_text()), "the setup link"
        ).group(0)
        context = browsing.browser.new_context(viewport={"width": 768, "height": 1024})
        page = context.new_page()
        page.goto(link)
        expect(page.get_by_role("heading", level=1)).to_have_text("Erstes Admin-Konto anlegen")
        check_accessibility(page, "first start")
        screenshot(page, "setup-tablet")
        page.get_by_label("Benutzername").fill("ada")
        page.get_by_label("Passwort (mindestens 10 Zeichen)").fill("first-admin-pw")
        page.get_by_label("Passwort wiederholen").fill("first-admin-pw")
        page.get_by_role("button", name="Konto anlegen").click()
        page.wait_for_url(re.compile(r"/login$"))
        # The token never reached the server's log as part of an address, and it worked once only.
        assert "token=" not in page.url
        token = link.split("token=", 1)[1]
        again = httpx.post(f"{backend.url}/api/setup", json={"token": token, "username": "bob", "password": "x" * 12})
        assert again.json()["code"] == "SETUP_DONE"
        context.close()
    finally:
        processes.kill_all()
