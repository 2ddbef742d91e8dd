"""Users, passwords and credentials; no HTTP here."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import Select, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.errors import AppError, ErrorCode
from backend.settings import Settings
from backend.users.models import Credential, CredentialKind, Role, User

log = logging.getLogger(__name__)

USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
MIN_PASSWORD = 10
# Argon2 work grows with the password; a bound keeps a login from being a CPU attack.
MAX_PASSWORD = 256


def make_hasher(settings: Settings) -> PasswordHash:
    return PasswordHash((Argon2Hasher(time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_kib),))


def normalise_username(name: str) -> str:
    username = name.strip().lower()
    if not USERNAME.fullmatch(username):
        raise AppError(
            ErrorCode.INVALID_REQUEST,
            "A user name has 1 to 64 characters: letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit.",
        )
    return username


def check_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AppError(ErrorCode.INVALID_REQUEST, f"A password has {MIN_PASSWORD} to {MAX_PASSWORD} characters.")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Users:
    """Creating users and checking their passwords."""

    def __init__(self, hasher: PasswordHash, parallel_hashes: int | None = None) -> None:
        self.hasher = hasher
        # Each Argon2 hash holds APP_ARGON2_MEMORY_KIB (64 MiB) while it runs; a flood of logins on
        # the 40 threads of the request pool would need gigabytes. One hash per core at a time.
        self._slots = threading.BoundedSemaphore(parallel_hashes or os.cpu_count() or 1)
        # Verified when the user name is unknown, so a wrong name costs as long as a wrong password.
        self._decoy = self._hash(secrets.token_urlsafe(16))

    def _hash(self, password: str) -> str:
        with self._slots:
            return self.hasher.hash(password)

    def _verify(self, password: str, hashed: str) -> bool:
        with self._slots:
            return bool(self.hasher.verify(password, hashed))

    def count(self, session: Session) -> int:
        return int(session.scalar(select(func.count()).select_from(User)) or 0)

    def create(self, session: Session, username: str, password: str, role: Role, now: datetime) -> User:
        name = normalise_username(username)
        check_password(password)
        if session.scalar(select(User.id).where(User.username == name)) is not None:
            raise AppError(ErrorCode.USER_EXISTS, f"There is already a user named {name!r}.")
        user = User(username=name, password_hash=self._hash(password), role=role, is_active=True, created_at=now)
        session.add(user)
        try:
            session.flush()
        except IntegrityError as exc:
            raise AppError(ErrorCode.USER_EXISTS, f"There is already a user named {name!r}.") from exc
        log.info("user %s created with role %s", name, role.value)
        return user

    def authenticate(self, session: Session, username: str, password: str) -> User | None:
        name = username.strip().lower()
        # A name no user can have is not looked up (a NUL byte would be a PostgreSQL error, not a 401).
        user = session.scalar(select(User).where(User.username == name)) if USERNAME.fullmatch(name) else None
        if user is None or not user.is_active:
            self._verify(password[:MAX_PASSWORD], self._decoy)
            return None
        if len(password) > MAX_PASSWORD or not self._verify(password, user.password_hash):
            return None
        return user

    def all(self, session: Session) -> list[User]:
        return list(session.scalars(select(User).order_by(User.username)))

    def update(
        self, session: Session, user_id: int, *, role: Role | None, is_active: bool | None, now: datetime
    ) -> User:
        """Change a user's role or deactivate them (which ends all their sessions and tokens).

        The last active admin can be neither demoted nor deactivated: nobody could undo it.
        """
        user = session.get(User, user_id)
        if user is None:
            raise AppError(ErrorCode.USER_NOT_FOUND, f"There is no user {user_id}.")
        loses_admin = user.role is Role.ADMIN and user.is_active and (role is Role.ARCHIVIST or is_active is False)
        if loses_admin:
            # Row locks (PostgreSQL; SQLite has one writer anyway) keep two admins from demoting each other at once.
            admins = session.scalars(
                select(User.id).where(User.role == Role.ADMIN, User.is_active.is_(True)).with_for_update()
            ).all()
            if set(admins) <= {user.id}:
                raise AppError(ErrorCode.LAST_ADMIN, "This is the last admin; make someone else an admin first.")
        if role is not None:
            user.role = role
        if is_active is not None:
            user.is_active = is_active
            if not is_active:
                Credentials().revoke_all(session, user.id, now)
        session.commit()
        log.info("user %d changed: role=%s active=%s", user.id, user.role.value, user.is_active)
        return user

    def change_password(self, session: Session, user: User, new_password: str) -> None:
        check_password(new_password)
        user.password_hash = self._hash(new_password)
        session.flush()

    def reset_password(
        self, session: Session, user_id: int, new_password: str, now: datetime, *, keep: int | None = None
    ) -> User:
        """An admin's reset: the new password, and every session and token of the user ended (whoever
        knew the old password is out); ``keep`` spares the credential of an admin resetting their own."""
        user = session.get(User, user_id)
        if user is None:
            raise AppError(ErrorCode.USER_NOT_FOUND, f"There is no user {user_id}.")
        self.change_password(session, user, new_password)
        Credentials().revoke_all(session, user.id, now, keep=keep)
        session.commit()
        log.info("password of user %d reset by an admin", user.id)
        return user


@cache
def _resolve_statement() -> Select[Credential, User]:
    # Asked on every request: built once (on first use), executed with parameters.
    return (
        select(Credential, User)
        .join(User, User.id == Credential.user_id)
        .where(Credential.token_hash == bindparam("token_hash"), Credential.kind == bindparam("kind"))
    )


@dataclass(frozen=True)
class Issued:
    token: str
    csrf_token: str | None
    expires_at: datetime


class Credentials:
    """Bearer tokens and browser sessions: random, stored as SHA-256, revocable."""

    def issue(self, session: Session, user: User, kind: CredentialKind, now: datetime, ttl: timedelta) -> Issued:
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32) if kind is CredentialKind.SESSION else None
        session.add(
            Credential(
                user_id=user.id,
                kind=kind,
                token_hash=token_hash(token),
                csrf_hash=token_hash(csrf) if csrf else None,
                created_at=now,
                expires_at=now + ttl,
            )
        )
        session.flush()
        return Issued(token, csrf, now + ttl)

    def resolve(
        self, session: Session, token: str, kind: CredentialKind, now: datetime
    ) -> tuple[Credential, User] | None:
        row = session.execute(_resolve_statement(), {"token_hash": token_hash(token), "kind": kind}).first()
        if row is None:
            return None
        # Unpacked: Row.tuple() is deprecated in SQLAlchemy 2.1, and its warning costs ~60 us a request.
        credential, user = row
        if credential.revoked_at is not None or credential.expires_at <= now or not user.is_active:
            return None
        return credential, user

    def csrf_matches(self, credential: Credential, csrf_token: str | None) -> bool:
        if not csrf_token or credential.csrf_hash is None:
            return False
        return hmac.compare_digest(token_hash(csrf_token), credential.csrf_hash)

    def revoke_all(self, session: Session, user_id: int, now: datetime, *, keep: int | None = None) -> None:
        statement = update(Credential).where(Credential.user_id == user_id, Credential.revoked_at.is_(None))
        if keep is not None:
            statement = statement.where(Credential.id != keep)
        session.execute(statement.values(revoked_at=now))

    def revoke(self, session: Session, credential_id: int, now: datetime) -> None:
        session.execute(
            update(Credential)
            .where(Credential.id == credential_id, Credential.revoked_at.is_(None))
            .values(revoked_at=now)
        )
