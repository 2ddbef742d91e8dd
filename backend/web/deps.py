"""What the web UI's page routes get injected: the page (who asks, in which language, how to
render), and the checks that a person is logged in, or an admin — on the server, not by hidden links.

A page route is thin: it reads what it shows through the same services as the API and returns
``page.render("template.html", ...)``. Everything that changes data goes through ``/api`` (the
pages' scripts send the session cookie and the CSRF token), so pages are only ever GETs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from backend.deps import SESSION_COOKIE, ServicesDep, SessionDep
from backend.errors import AppError, ErrorCode
from backend.users.models import CredentialKind, Role, User
from backend.web.i18n import LANGUAGE_COOKIE, choose_language
from backend.web.rendering import Renderer


@dataclass
class Page:
    """One request for a page: who asks (None before login), in which language, and the renderer."""

    request: Request
    user: User | None
    language: str
    renderer: Renderer

    def gettext(self, message: str) -> str:
        return self.renderer.gettext(self.language, message)

    def ngettext(self, singular: str, plural: str, count: int) -> str:
        return self.renderer.ngettext(self.language, singular, plural, count)

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        return self.renderer.render(
            self.language,
            template,
            {"user": self.user, "path": self.request.url.path, "request_url": str(self.request.url), **context},
            status,
        )


class LoginRequired(Exception):  # noqa: N818 (a signal to the handler, not an error)
    """A page needs a logged-in person: the handler sends the browser to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def safe_next(target: str | None) -> str:
    """Where to go after login: only a path on this site (never ``//host`` or ``/\\host``)."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith(("//", "/\\"))
        or any(ord(c) < 0x20 for c in target)
    ):
        return "/documents"
    return target


def login_redirect(next_path: str) -> Response:
    return RedirectResponse(f"/login?next={quote(safe_next(next_path), safe='/')}", status_code=303)


async def get_renderer(request: Request) -> Renderer:
    renderer: Renderer = request.app.state.renderer
    return renderer


RendererDep = Annotated[Renderer, Depends(get_renderer)]


def _session_user(request: Request, services: ServicesDep, session: SessionDep) -> User | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    found = services.credentials.resolve(session, cookie, CredentialKind.SESSION, services.clock())
    return found[1] if found else None


def public_page(request: Request, renderer: RendererDep, services: ServicesDep, session: SessionDep) -> Page:
    """A page anyone may open (login, first start); it knows the person if they are logged in."""
    user = _session_user(request, services, session)
    language = choose_language(user.language if user else None, request.cookies.get(LANGUAGE_COOKIE))
    return Page(request, user, language, renderer)


def user_page(page: Annotated[Page, Depends(public_page)]) -> Page:
    if page.user is None:
        target = page.request.url.path + (f"?{page.request.url.query}" if page.request.url.query else "")
        raise LoginRequired(target)
    return page


def admin_page(page: Annotated[Page, Depends(user_page)]) -> Page:
    assert page.user is not None
    if page.user.role is not Role.ADMIN:
        raise AppError(ErrorCode.FORBIDDEN, "Only an admin may open this page.")
    return page


PublicPage = Annotated[Page, Depends(public_page)]
UserPage = Annotated[Page, Depends(user_page)]
AdminPage = Annotated[Page, Depends(admin_page)]
