"""The admins' page of users (create, role, reset a password, deactivate) and everyone's own account
page (change one's password). Rendered with the users as the API lists them; every change goes
through /api/users and /api/auth/password from the pages' scripts."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import APIRouter
from starlette.responses import Response

from backend.deps import ServicesDep, SessionDep
from backend.users.models import Role
from backend.users.schemas import UserOut
from backend.users.service import MIN_PASSWORD
from backend.web.deps import AdminPage, UserPage
from backend.web.i18n import N_

router = APIRouter(include_in_schema=False)

ROLE_LABELS: Mapping[Role, str] = {Role.ARCHIVIST: N_("Archivist"), Role.ADMIN: N_("Admin")}


@router.get("/admin/users")
def users_page(page: AdminPage, services: ServicesDep, session: SessionDep) -> Response:
    assert page.user is not None
    users = [UserOut.model_validate(u) for u in services.users.all(session)]
    return page.render(
        "users.html",
        title=page.gettext(N_("Users")),
        users=users,
        me=page.user.id,
        roles=[(role.value, page.gettext(label)) for role, label in ROLE_LABELS.items()],
        role_labels={role.value: page.gettext(label) for role, label in ROLE_LABELS.items()},
        min_password=MIN_PASSWORD,
    )


@router.get("/account")
def account_page(page: UserPage) -> Response:
    assert page.user is not None
    return page.render(
        "users_account.html",
        title=page.gettext(N_("Your account")),
        role_label=page.gettext(ROLE_LABELS[page.user.role]),
        min_password=MIN_PASSWORD,
    )
