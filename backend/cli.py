"""``python -m backend create-user NAME --role admin|archivist [--password-stdin]``."""

from __future__ import annotations

import argparse
import getpass
import sys

from backend.db import SchemaTooNewError, migrate, startup_lock
from backend.deps import build_services
from backend.errors import AppError
from backend.settings import Settings
from backend.users.models import Role


def create_user(settings: Settings, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend create-user")
    parser.add_argument("username")
    parser.add_argument("--role", choices=[r.value for r in Role], default=Role.ARCHIVIST.value)
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input (for scripts)"
    )
    args = parser.parse_args(argv)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("The passwords differ.", file=sys.stderr)
            return 1
    services = build_services(settings)
    try:
        with startup_lock(services.db.engine):
            migrate(services.db.engine)
        with services.db.sessions() as session:
            user = services.users.create(session, args.username, password, Role(args.role), services.clock())
            session.commit()
            print(f"User {user.username} ({user.role.value}) created.")
    except AppError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    except SchemaTooNewError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        services.db.dispose()
    return 0


def reindex_search(settings: Settings, argv: list[str]) -> int:
    """``python -m backend reindex-search``: the search index rebuilt from every line (after a
    restore from a backup taken without it, or a change of folding)."""
    parser = argparse.ArgumentParser(prog="python -m backend reindex-search")
    parser.add_argument("--batch", type=int, default=5000, help="lines written per transaction")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    from backend.search.index import rebuild

    services = build_services(settings)
    try:
        with startup_lock(services.db.engine):
            migrate(services.db.engine)
        count = rebuild(services.db.sessions, batch=args.batch)
        print(f"Search index rebuilt: {count} lines.")
    except SchemaTooNewError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        services.db.dispose()
    return 0
