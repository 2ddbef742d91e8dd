"""``python -m backend``: validate the settings, then serve the API and the management port.

``python -m backend create-user NAME --role admin|archivist`` makes a user (password asked
for, or read from stdin with ``--password-stdin``; never from the command line, which
other users of the machine can see). ``backup PATH``, ``restore PATH`` and ``verify-backup PATH``
save, bring back and check the whole archive (backend/backup/).
``reindex-search`` rebuilds the search index from every line.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading

import uvicorn
from pydantic import ValidationError

from backend.settings import Settings


def _settings() -> Settings | None:
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"The backend cannot start; fix its settings (APP_*):\n{exc}", file=sys.stderr)
        return None
    from backend.users.bootstrap import first_admin_problem

    problem = first_admin_problem(settings)
    if problem is not None:
        print(f"The backend cannot start; fix its settings (APP_*):\n{problem}", file=sys.stderr)
        return None
    return settings


def serve(settings: Settings) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from backend.app import build_services, create_app, create_management_app
    from backend.db import SchemaTooNewError, refuse_newer_schema
    from backend.storage import StorageUnavailableError

    services = build_services(settings)
    try:
        services.documents.storage.check()
    except StorageUnavailableError as exc:
        print(f"The backend cannot start; its document store is not usable:\n{exc}", file=sys.stderr)
        services.db.dispose()
        return 2
    try:
        refuse_newer_schema(services.db.engine)
    except SchemaTooNewError as exc:
        print(f"The backend cannot start; its database is newer than its code:\n{exc}", file=sys.stderr)
        services.db.dispose()
        return 2
    except SQLAlchemyError as exc:
        print(f"The backend cannot start; its database does not answer:\n{exc}", file=sys.stderr)
        services.db.dispose()
        return 2
    public = uvicorn.Server(
        uvicorn.Config(create_app(settings, services=services), host=settings.host, port=settings.port, log_config=None)
    )
    management = uvicorn.Server(
        uvicorn.Config(
            create_management_app(services),
            host=settings.management_host,
            port=settings.management_port,
            log_config=None,
            access_log=False,
        )
    )
    # Everything made so far (modules, the apps, their routes and schemas) lives as long as the
    # process: frozen, a full collection no longer walks it. Unfrozen, each full collection
    # under load held every request for 80-400 ms on the build machine (bench/bench_api.py's p99).
    gc.collect()
    gc.freeze()
    # The management server runs in a thread (uvicorn installs no signal handlers there), so
    # Ctrl-C reaches the public server, and its end ends the management server too.
    thread = threading.Thread(target=management.run, name="management", daemon=True)
    thread.start()
    print(
        f"Open {settings.public_url}  (backend; management: http://{settings.management_host}:{settings.management_port})",
        flush=True,
    )
    try:
        public.run()
    except KeyboardInterrupt:
        # uvicorn shuts down gracefully, then re-raises Ctrl-C; that is a normal stop.
        pass
    finally:
        management.should_exit = True
        thread.join(timeout=10)
    return 0 if public.started else 1


def main(argv: list[str]) -> int:
    settings = _settings()
    if settings is None:
        return 2
    if not argv:
        from backend.production import production_problems

        problems = production_problems(settings)
        if problems:
            print(
                "The backend cannot start in production (APP_ENV=production):", *problems, sep="\n  ", file=sys.stderr
            )
            return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
    )
    # Alembic lists every plugin it sets up at INFO on each start; the migrations it runs stay visible.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    if argv and argv[0] == "create-user":
        from backend.cli import create_user

        return create_user(settings, argv[1:])
    if argv and argv[0] == "reindex-search":
        from backend.cli import reindex_search

        return reindex_search(settings, argv[1:])
    if argv and argv[0] in ("backup", "restore", "verify-backup"):
        from backend import cli

        if argv[0] == "verify-backup":
            return cli.verify(argv[1:])
        return (cli.backup if argv[0] == "backup" else cli.restore)(settings, argv[1:])
    if argv:
        print(
            f"unknown command {argv[0]!r}; usage: python -m backend "
            "[create-user NAME --role ROLE | backup PATH | restore PATH | verify-backup PATH | reindex-search]",
            file=sys.stderr,
        )
        return 2
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
