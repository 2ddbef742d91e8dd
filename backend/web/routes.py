"""The web UI's pages outside /api: the start page, login, first start, and the error pages.

Each part of the UI has its own module of page routes in this package, included here, so
``backend/app.py`` includes one router; see backend/web/deps.py for how a page route looks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from backend.errors import AppError, ErrorCode
from backend.web.deps import LoginRequired, PublicPage, login_redirect, safe_next
from backend.web.i18n import LANGUAGE_COOKIE, N_, choose_language
from backend.web.rendering import Renderer
from backend.web.rendering import StaticFiles as StaticVersions

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)


@router.get("/")
def start(page: PublicPage) -> Response:
    return RedirectResponse("/documents" if page.user else "/login", status_code=303)


@router.get("/login")
def login(page: PublicPage, next: str | None = None) -> Response:
    if page.user is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return page.render("login.html", next=safe_next(next), title=page.gettext("Log in"))


@router.get("/setup")
def setup(page: PublicPage) -> Response:
    """The page the start-up link opens; the token is in the link's fragment, never sent here."""
    return page.render("setup.html", title=page.gettext("Create the first admin account"))


@router.get("/i18n/errors.{language}.json")
def error_catalog(request: Request, language: str, v: str | None = None) -> Response:
    """The error messages of one language; under its content's hash (``?v=``) kept for a year."""
    renderer: Renderer = request.app.state.renderer
    catalog = renderer.error_catalogs.get(language)
    if catalog is None:
        raise AppError(ErrorCode.NOT_FOUND, "No error messages in this language.")
    current = v == catalog.version  # an old hash gets today's text, which must not be kept a year
    cache = "public, max-age=31536000, immutable" if current else "no-cache"
    etag = f'"{catalog.version}"'
    headers = {"Cache-Control": cache, "X-Content-Type-Options": "nosniff", "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(catalog.body, media_type="application/json", headers=headers)


def _is_page_request(request: Request) -> bool:
    """A browser opening a page (it asks for HTML); API calls and scripts' requests keep JSON."""
    path = request.url.path
    if path.startswith(("/api/", "/static/")) or path == "/api":
        return False
    return "text/html" in request.headers.get("accept", "")


def page_errors(request: Request, error: AppError, status: int) -> Response | None:
    """A page request's error as a calm page in the reader's language; API requests keep JSON."""
    if not _is_page_request(request):
        return None
    renderer: Renderer = request.app.state.renderer
    # The language cookie mirrors the user's choice (the UI sets both), so no database trip here.
    language = choose_language(None, request.cookies.get(LANGUAGE_COOKIE))
    title = renderer.gettext(language, N_("Page not found") if status == 404 else N_("Something is not right"))
    message = renderer.error_message(language, error.code)
    return renderer.render(
        language,
        "error.html",
        {
            "user": None,
            "path": request.url.path,
            "title": title,
            "message": message,
            "code": error.code,
            "status": status,
        },
        status,
    )


async def login_required(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    return login_redirect(exc.next_path)


class Static(StaticFiles):
    """The UI's files; an address with the content's hash (``?v=``) may be kept for a year."""

    def __init__(self, folder: Path) -> None:
        super().__init__(directory=folder, follow_symlink=False)
        self.versions = StaticVersions(folder)

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        immutable = self._names_this_content(path, scope)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable" if immutable else "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def _names_this_content(self, path: str, scope: Scope) -> bool:
        """Only ``?v=`` the hash of this very content may be kept for a year. Several backends run
        side by side during an update: a new page's ``app.js?v=NEW`` answered by a backend still on
        the old release must not be kept a year, or that browser runs yesterday's script against
        today's pages until it is cleared."""
        asked = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("v")
        if asked is None or len(asked) != 1:
            return False
        try:
            return asked[0] == self.versions.version(path)
        except FileNotFoundError:
            return False


def static_files(frontend_dir: Path) -> Static:
    return Static(frontend_dir / "static")


# The parts of the UI, each its own module of page routes (imported here, after this module's
# own routes, so the start page and login are matched first).
from backend.web import documents, imports, search, training, users, viewer  # noqa: E402

for part in (documents, viewer, search, imports, users, training):
    router.include_router(part.router)
