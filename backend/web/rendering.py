"""Rendering the web UI's pages: one Jinja2 environment per language, the static files' versioned
addresses, and the headers every page carries."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from starlette.responses import HTMLResponse

from backend.users.schemas import LANGUAGES
from backend.web.error_messages import ERROR_MESSAGES, FALLBACK
from backend.web.i18n import LANGUAGE_NAMES, Catalogs

# Only the UI's own scripts and styles run (no inline script or style attribute: scripts set
# styles through the CSSOM, which CSP allows); pages talk to their own origin and nothing else.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "manifest-src 'self'"
)
PAGE_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # A page shows one person's view of the archive at one moment: never from a shared cache.
    "Cache-Control": "no-store",
}


class StaticFiles:
    """The addresses of the static files, each with a hash of its content, so a browser may keep a
    file for a year and still never runs yesterday's script against today's page."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self._versions: dict[str, str] = {}

    def version(self, name: str) -> str:
        """The hash of the file's content; FileNotFoundError for a name outside the folder or missing."""
        version = self._versions.get(name)
        if version is None:
            path = (self.folder / name).resolve()
            if not path.is_relative_to(self.folder) or not path.is_file():
                raise FileNotFoundError(f"no static file {name!r} in {self.folder}")
            version = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            self._versions[name] = version
        return version

    def url(self, name: str) -> str:
        return f"/static/{name}?v={self.version(name)}"


def _json_script(value: Any) -> Markup:
    """JSON for a ``<script type="application/json">``: no ``</script>`` or comment can close it."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)  # noqa: S704 (escaped above for the script element)


class ErrorCatalog:
    """The message of every error code in one language, as the JSON file the scripts fetch once an
    error is to be shown (not in every page: ~11 KB the pages would otherwise carry each time)."""

    def __init__(self, language: str, messages: Mapping[str, str]) -> None:
        self.body = json.dumps(messages, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
        self.version = hashlib.sha256(self.body).hexdigest()[:12]
        self.url = f"/i18n/errors.{language}.json?v={self.version}"


class Renderer:
    """The pages of every language, built once per process from ``frontend/``."""

    def __init__(self, frontend_dir: Path) -> None:
        self.catalogs = Catalogs(frontend_dir / "locales")
        self.static = StaticFiles(frontend_dir / "static")
        loader = FileSystemLoader(frontend_dir / "templates")
        self.error_catalogs = {
            language: ErrorCatalog(
                language,
                {code: self.catalogs.translations(language).gettext(text) for code, text in ERROR_MESSAGES.items()},
            )
            for language in LANGUAGES
        }
        self._environments = {language: self._environment(loader, language) for language in LANGUAGES}

    def _environment(self, loader: FileSystemLoader, language: str) -> Environment:
        environment = Environment(
            loader=loader,
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
        )
        translations = self.catalogs.translations(language)
        environment.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
        environment.globals.update(
            language=language,
            languages=[(code, LANGUAGE_NAMES[code]) for code in LANGUAGES],
            static=self.static.url,
            json_script=_json_script,
            # Where the scripts fetch the message of every error code in this language.
            error_messages_url=self.error_catalogs[language].url,
            # A plural message for a page's script: each form, for it to choose by the count.
            plural_forms=lambda singular, plural: self.catalogs.plural_forms(language, singular, plural),
        )
        return environment

    def gettext(self, language: str, message: str) -> str:
        return self.catalogs.gettext(language, message)

    def ngettext(self, language: str, singular: str, plural: str, count: int) -> str:
        return self.catalogs.ngettext(language, singular, plural, count)

    def render(self, language: str, template: str, context: Mapping[str, Any], status: int = 200) -> HTMLResponse:
        body = self._environments[language].get_template(template).render(context)
        return HTMLResponse(body, status_code=status, headers=dict(PAGE_HEADERS))

    def error_message(self, language: str, code: str) -> str:
        return self.gettext(language, ERROR_MESSAGES.get(code, ERROR_MESSAGES[FALLBACK]))
