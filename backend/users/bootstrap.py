"""The first admin: unattended from APP_ADMIN_*, else a one-time setup link printed at start."""

from __future__ import annotations

import logging
import secrets

from backend.deps import Services
from backend.errors import AppError, ErrorCode
from backend.settings import Settings
from backend.users.models import Role
from backend.users.service import check_password, normalise_username

log = logging.getLogger(__name__)


def bootstrap_first_admin(services: Services, announce: bool = True) -> None:
    settings = services.settings
    with services.db.sessions() as session:
        if services.users.count(session) > 0:
            services.setup.token = None
            return
        if settings.admin_username is not None and settings.admin_password is not None:
            try:
                services.users.create(
                    session,
                    settings.admin_username,
                    settings.admin_password.get_secret_value(),
                    Role.ADMIN,
                    services.clock(),
                )
                session.commit()
            except AppError as exc:
                if exc.code is not ErrorCode.USER_EXISTS:
                    raise
                # Another backend process on the same database made the admin a moment ago.
                return
            log.info("first admin %s created from APP_ADMIN_USERNAME", settings.admin_username.strip().lower())
            return
    services.setup.token = secrets.token_urlsafe(32)
    if announce:
        # Printed, not logged: the token is a secret and logs travel further than the console.
        print(
            "\nNo users yet. Create the first admin here (the link works once):\n"
            f"  {settings.public_url}/setup#token={services.setup.token}\n"
            "  or: curl -X POST "
            f"{settings.public_url}/api/setup -H 'Content-Type: application/json' "
            f"""-d '{{"token":"{services.setup.token}","username":"NAME","password":"PASSWORD"}}'\n""",
            flush=True,
        )


def first_admin_problem(settings: Settings) -> str | None:
    """What is wrong with APP_ADMIN_USERNAME / APP_ADMIN_PASSWORD, checked before the server starts."""
    if settings.admin_username is None or settings.admin_password is None:
        return None
    try:
        normalise_username(settings.admin_username)
    except AppError as exc:
        return f"APP_ADMIN_USERNAME: {exc.message}"
    try:
        check_password(settings.admin_password.get_secret_value())
    except AppError as exc:
        return f"APP_ADMIN_PASSWORD: {exc.message}"
    return None
