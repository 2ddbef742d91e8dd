"""JSON of the user and login routes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from pydantic import Field

from backend.schemas import ApiModel, OneLine
from backend.users.models import Role

# The web UI's languages; the first is its default (the archive's family writes German).
Language = Literal["de", "en", "es"]
LANGUAGES: tuple[str, ...] = get_args(Language)

# Length bounds here give a 422 before any hashing; the exact rules live in the service.
Password = Field(min_length=1, max_length=1024)


class UserOut(ApiModel):
    id: int
    username: str
    role: Role
    is_active: bool
    created_at: datetime
    language: Language | None = None


class UserCreate(ApiModel):
    username: OneLine = Field(max_length=64)
    password: str = Password
    role: Role


class SetupRequest(ApiModel):
    token: OneLine = Field(max_length=200)
    username: OneLine = Field(max_length=64)
    password: str = Password


class LoginRequest(ApiModel):
    username: OneLine = Field(max_length=64)
    password: str = Password


class TokenOut(ApiModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 (the OAuth2 token type, not a secret)
    expires_at: datetime


class SessionOut(ApiModel):
    user: UserOut
    # Send it back as the X-CSRF-Token header with every POST/PATCH/PUT/DELETE made with the cookie.
    csrf_token: str


class UserUpdate(ApiModel):
    role: Role | None = None
    is_active: bool | None = None


class PasswordChange(ApiModel):
    current_password: str = Password
    new_password: str = Password


class PasswordReset(ApiModel):
    """An admin sets a new password for a user who forgot theirs."""

    password: str = Password


class LanguageChange(ApiModel):
    language: Language
