"""Users and their credentials (bearer tokens and browser sessions, stored only as hashes)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Enum, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base, UtcDateTime


class Role(StrEnum):
    ARCHIVIST = "archivist"
    ADMIN = "admin"


class CredentialKind(StrEnum):
    BEARER = "bearer"
    SESSION = "session"


def _values(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stored lower-case: "Erika" and "erika" are one person.
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=16, values_callable=_values))
    # Users are deactivated, never deleted: documents and corrections keep naming them.
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # The web UI's language, chosen by the user (None: the UI's default); see backend/web/i18n.py.
    language: Mapped[str | None] = mapped_column(String(8), default=None)


class Credential(Base):
    """A bearer token or a browser session. Only SHA-256 hashes are stored, so a copy of the
    database lets nobody log in; revoking sets ``revoked_at``."""

    __tablename__ = "credentials"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[CredentialKind] = mapped_column(
        Enum(CredentialKind, native_enum=False, length=16, values_callable=_values)
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Sessions only: the hash of the CSRF token the UI must send with every state-changing request.
    csrf_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
