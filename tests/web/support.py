"""The browser tests' tools: the live system (OCR service + backend as processes on loopback),
logged-in browser contexts, axe-core checks and screenshots.

Every page test opens pages through :class:`Browsing` (``browsing`` fixture): a context per
person, language and width; ``check_accessibility`` fails on any serious or critical axe
violation; ``screenshot`` saves a PNG under ``test-output/screenshots/`` for a person to review.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, BrowserContext, Page

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LANGUAGES = ("de", "en", "es")
# The widths every page must work at: a tablet in portrait, and a laptop.
WIDTHS = {"tablet": (768, 1024), "desktop": (1280, 900)}
ARCHIVIST, ARCHIVIST_PASSWORD = "erika", "archivist-password-1"
BLOCKING_IMPACTS = ("serious", "critical")
TOUCH_TARGETS_SCRIPT = (Path(__file__).parent / "touch_targets.js").read_text(encoding="utf-8")


@dataclass
class LiveSystem:
    """The backend (and the OCR service behind it) the browser tests talk to."""

    url: str
    admin: tuple[str, str]
    archivist: tuple[str, str]
    ocr_url: str

    def api(self, who: str = "admin") -> httpx.Client:
        """A client of the API with a bearer token, for arranging what a test needs."""
        username, password = self.admin if who == "admin" else self.archivist
        token = httpx.post(f"{self.url}/api/auth/token", data={"username": username, "password": password}, timeout=60)
        assert token.status_code == 200, token.text
        headers = {"Authorization": f"Bearer {token.json()['accessToken']}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)


@dataclass
class Browsing:
    browser: Browser
    live: LiveSystem
    contexts: list[BrowserContext] = field(default_factory=list)

    @contextmanager
    def context(
        self, who: str | None = "admin", language: str = "de", width: str = "desktop"
    ) -> Iterator[BrowserContext]:
        """A browser context logged in as ``who`` ("admin", "archivist", None: nobody) with the UI in ``language``."""
        w, h = WIDTHS[width]
        context = self.browser.new_context(
            base_url=self.live.url, viewport={"width": w, "height": h}, locale="de-DE", has_touch=width == "tablet"
        )
        context.set_default_timeout(15_000)
        try:
            if who is not None:
                username, password = self.live.admin if who == "admin" else self.live.archivist
                login = context.request.post("/api/auth/login", data={"username": username, "password": password})
                assert login.ok, login.text()
                csrf = next(c["value"] for c in context.cookies() if c["name"] == "archiv_csrf")
                chosen = context.request.put(
                    "/api/auth/language", data={"language": language}, headers={"X-CSRF-Token": csrf}
                )
                assert chosen.ok, chosen.text()
            context.add_cookies([{"name": "archiv_lang", "value": language, "url": self.live.url}])
            yield context
        finally:
            context.close()

    @contextmanager
    def page(self, who: str | None = "admin", language: str = "de", width: str = "desktop") -> Iterator[Page]:
        with self.context(who, language, width) as context:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page
            assert not errors, f"script errors on {page.url}: {errors}"


def check_accessibility(page: Page, what: str) -> None:
    """No serious or critical axe-core violation on the page as it is now."""
    result = Axe().run(page)
    blocking = [v for v in result.response["violations"] if v.get("impact") in BLOCKING_IMPACTS]
    report = [
        {"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"][:5]]}
        for v in blocking
    ]
    assert not blocking, f"{what}: accessibility violations\n{json.dumps(report, indent=1, ensure_ascii=False)}"


def audit_page(page: Page, what: str, shot: str, language: str, width: str) -> None:
    """What every page gets checked for as it is now: no serious or critical axe violation, no touch
    target under 44 px, and (in German) its screenshot ``<shot>-<width>.png`` for a person to review."""
    check_accessibility(page, f"{what} {language} {width}")
    assert touch_targets_too_small(page) == []
    if language == "de":
        screenshot(page, f"{shot}-{width}")


def screenshot(page: Page, name: str) -> Path:
    """A full-page PNG under test-output/screenshots/ (the folder a person reviews)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def touch_targets_too_small(page: Page, minimum: int = 44) -> list[dict[str, Any]]:
    """Visible buttons, links styled as controls, inputs and selects smaller than minimum x minimum px
    (links inside running text are exempt, as WCAG 2.5.5 allows)."""
    found: list[dict[str, Any]] = page.evaluate(TOUCH_TARGETS_SCRIPT, minimum)
    return found
