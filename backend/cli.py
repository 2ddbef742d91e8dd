"""The management commands of ``python -m backend``: ``create-user``, ``backup``, ``restore``, ``verify-backup``."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from backend.backup.archive import BackupError
from backend.backup.restore import restore_backup
from backend.backup.service import create_backup, verify_backup
from backend.db import BrokenReferencesError, Database, SchemaTooNewError, migrate, startup_lock
from backend.deps import build_services, build_storage, utc_now
from backend.errors import AppError
from backend.settings import Settings
from backend.storage import Storage
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


def _storage_and_database(settings: Settings) -> tuple[Storage, Database]:
    return build_storage(settings), Database(settings.database_url)


def backup(settings: Settings, argv: list[str]) -> int:
    """``python -m backend backup PATH [--models-dir DIR] [--force]``."""
    parser = argparse.ArgumentParser(prog="python -m backend backup", description="Write one archive of everything.")
    parser.add_argument("path", type=Path, help="the archive file to write")
    parser.add_argument("--models-dir", type=Path, help="the OCR service's model store (OCR_MODELS_DIR), to include")
    parser.add_argument("--force", action="store_true", help="replace PATH if it exists")
    args = parser.parse_args(argv)
    storage, database = _storage_and_database(settings)
    try:
        result = create_backup(
            database.engine, storage, args.path, models_dir=args.models_dir, force=args.force, now=utc_now
        )
    except (BackupError, SQLAlchemyError, OSError) as exc:
        print(f"The backup failed; nothing was written to {args.path}:\n{exc}", file=sys.stderr)
        return 1
    finally:
        database.dispose()
    print(f"Backup written to {result.path} (database revision {result.manifest.alembic_revision}).")
    for note in result.notes:
        print(f"  {note}")
    return 0


def restore(settings: Settings, argv: list[str]) -> int:
    """``python -m backend restore PATH [--models-dir DIR]``: into an empty installation only."""
    parser = argparse.ArgumentParser(
        prog="python -m backend restore", description="Bring a backup back into an EMPTY installation."
    )
    parser.add_argument("path", type=Path, help="the archive to restore")
    parser.add_argument("--models-dir", type=Path, help="the OCR service's model store (OCR_MODELS_DIR) to fill")
    args = parser.parse_args(argv)
    storage, database = _storage_and_database(settings)
    try:
        storage.check()
        result = restore_backup(database.engine, storage, args.path, models_dir=args.models_dir)
    except (BackupError, BrokenReferencesError, SchemaTooNewError, SQLAlchemyError, OSError) as exc:
        print(f"The restore failed; nothing was changed:\n{exc}", file=sys.stderr)
        return 1
    finally:
        database.dispose()
    print(
        f"Restored {args.path}: {result.originals} originals, {sum(result.rows.values())} rows, "
        f"{result.models} model files; the database is migrated to this backend's revision."
    )
    for note in result.notes:
        print(f"  {note}")
    return 0


def verify(argv: list[str]) -> int:
    """``python -m backend verify-backup PATH``: exit status 0 only for a whole, readable archive."""
    parser = argparse.ArgumentParser(prog="python -m backend verify-backup", description="Check a backup archive.")
    parser.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    try:
        result = verify_backup(args.path)
    except (BackupError, OSError) as exc:
        print(f"{args.path} is NOT a usable backup:\n{exc}", file=sys.stderr)
        return 1
    manifest = result.manifest
    print(f"{args.path}: a whole backup, every checksum right.")
    print(
        f"  made {manifest.created_at.isoformat()} by backend {manifest.app_version} from {manifest.database_dialect}"
    )
    print(f"  database revision {manifest.alembic_revision}; {result.originals} originals; {result.models} model files")
    for table, rows in result.rows.items():
        print(f"  {table}: {rows} rows")
    return 0


def reindex_search(settings: Settings, argv: list[str]) -> int:
    """``python -m backend reindex-search``: the search index rebuilt from every line (after a
    restore from a backup taken without it, or a change of folding)."""
    parser = argparse.ArgumentParser(prog="python -m backend reindex-search")
    parser.add_argument("--batch", type=int, default=5000, help="lines (whole documents) indexed per transaction")
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
