"""Set-up of the first admin, logins (token and session), users."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.security import OAuth2PasswordRequestForm

from backend.deps import CSRF_COOKIE, SESSION_COOKIE, AdminUser, AuthenticatedDep, CurrentUser, ServicesDep, SessionDep
from backend.errors import AppError, ErrorCode
from backend.users.models import CredentialKind, Role, User
from backend.users.schemas import (
    LanguageChange,
    LoginRequest,
    PasswordChange,
    PasswordReset,
    SessionOut,
    SetupRequest,
    TokenOut,
    UserCreate,
    UserOut,
    UserUpdate,
)

router = APIRouter(prefix="/api")


def _throttle_keys(request: Request, username: str) -> list[str]:
    address = request.client.host if request.client else "unknown"
    # Cut to the longest possible user name, so a flood of huge names cannot grow the table's keys.
    return [f"user:{username.strip().lower()[:64]}", f"address:{address}"]


def _login(request: Request, services: ServicesDep, session: SessionDep, username: str, password: str) -> User:
    keys = _throttle_keys(request, username)
    services.throttle.check(keys)
    user = services.users.authenticate(session, username, password)
    if user is None:
        services.throttle.failed(keys)
        raise AppError(ErrorCode.INVALID_CREDENTIALS, "The user name or the password is wrong.")
    services.throttle.succeeded(keys[0])
    return user


@router.post("/setup", status_code=201)
def setup(body: SetupRequest, services: ServicesDep, session: SessionDep) -> UserOut:
    """Create the first admin with the one-time token printed at start-up."""
    if services.users.count(session) > 0:
        raise AppError(ErrorCode.SETUP_DONE, "The archive is set up already; ask an admin for an account.")
    if not services.setup.claim(body.token):
        raise AppError(ErrorCode.SETUP_TOKEN_INVALID, "This setup link is not valid. Use the link printed at start-up.")
    try:
        user = services.users.create(session, body.username, body.password, Role.ADMIN, services.clock())
        session.commit()
    except BaseException:
        services.setup.give_back(body.token)
        raise
    return UserOut.model_validate(user)


@router.post("/auth/token")
def token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], request: Request, services: ServicesDep, session: SessionDep
) -> TokenOut:
    """OAuth2 password flow for API clients: a bearer token, revoked by POST /api/auth/logout."""
    user = _login(request, services, session, form.username, form.password)
    issued = services.credentials.issue(session, user, CredentialKind.BEARER, services.clock(), services.token_ttl)
    session.commit()
    return TokenOut(access_token=issued.token, expires_at=issued.expires_at)


@router.post("/auth/login")
def login(
    body: LoginRequest, request: Request, response: Response, services: ServicesDep, session: SessionDep
) -> SessionOut:
    """Log in the web UI: an HttpOnly session cookie, and the CSRF token the UI sends back."""
    user = _login(request, services, session, body.username, body.password)
    issued = services.credentials.issue(session, user, CredentialKind.SESSION, services.clock(), services.session_ttl)
    session.commit()
    assert issued.csrf_token is not None
    secure = services.settings.secure_cookies or request.url.scheme == "https"
    max_age = int(services.session_ttl.total_seconds())
    # The session: never readable by a script.
    response.set_cookie(SESSION_COOKIE, issued.token, max_age, path="/", secure=secure, httponly=True, samesite="lax")
    # The web UI's scripts read the CSRF token from this cookie (any tab, after a reload) and send it
    # back as a header, which another site's page can neither read nor set; the server checks it
    # against the hash stored with the session, so the cookie alone proves nothing.
    response.set_cookie(
        CSRF_COOKIE, issued.csrf_token, max_age, path="/", secure=secure, httponly=False, samesite="strict"
    )
    return SessionOut(user=UserOut.model_validate(user), csrf_token=issued.csrf_token)


@router.post("/auth/logout", status_code=204)
def logout(auth: AuthenticatedDep, services: ServicesDep, session: SessionDep) -> Response:
    """Revoke the credential this request came with (the bearer token or the session)."""
    services.credentials.revoke(session, auth.credential.id, services.clock())
    session.commit()
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@router.get("/auth/me")
def me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)


@router.put("/auth/language")
def set_language(body: LanguageChange, user: CurrentUser, session: SessionDep) -> UserOut:
    """The web UI's language for this user, kept across devices and sessions."""
    # The user was loaded in this request's session (by the authentication), so this is an update.
    user.language = body.language
    session.commit()
    return UserOut.model_validate(user)


@router.get("/users")
def list_users(_: AdminUser, services: ServicesDep, session: SessionDep) -> list[UserOut]:
    return [UserOut.model_validate(u) for u in services.users.all(session)]


@router.post("/users", status_code=201)
def create_user(body: UserCreate, _: AdminUser, services: ServicesDep, session: SessionDep) -> UserOut:
    user = services.users.create(session, body.username, body.password, body.role, services.clock())
    session.commit()
    return UserOut.model_validate(user)


@router.patch("/users/{user_id}")
def update_user(
    user_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    body: UserUpdate,
    _: AdminUser,
    services: ServicesDep,
    session: SessionDep,
) -> UserOut:
    """Change the role, or deactivate (``isActive: false`` logs the user out everywhere)."""
    user = services.users.update(session, user_id, role=body.role, is_active=body.is_active, now=services.clock())
    return UserOut.model_validate(user)


@router.put("/users/{user_id}/password", status_code=204)
def reset_password(
    user_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    body: PasswordReset,
    auth: AuthenticatedDep,
    _: AdminUser,
    services: ServicesDep,
    session: SessionDep,
) -> Response:
    """Set a user's password (they forgot it); every session and token of theirs ends."""
    keep = auth.credential.id if auth.user.id == user_id else None
    services.users.reset_password(session, user_id, body.password, services.clock(), keep=keep)
    return Response(status_code=204)


@router.post("/auth/password", status_code=204)
def change_password(
    body: PasswordChange, request: Request, auth: AuthenticatedDep, services: ServicesDep, session: SessionDep
) -> Response:
    """Change one's own password; every other session and token of the user ends."""
    try:
        _login(request, services, session, auth.user.username, body.current_password)
    except AppError as exc:
        if exc.code is not ErrorCode.INVALID_CREDENTIALS:
            raise
        raise AppError(ErrorCode.WRONG_PASSWORD, "The current password is wrong.") from exc
    services.users.change_password(session, auth.user, body.new_password)
    services.credentials.revoke_all(session, auth.user.id, services.clock(), keep=auth.credential.id)
    session.commit()
    return Response(status_code=204)
