"""``python -m ocr_service``: validate the settings, then serve the OCR API and the management port.

``check-models`` checks the model store and exits (the image runs it before the server);
``models …`` manages the store (ocr_service/cli.py).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading

import uvicorn
from pydantic import ValidationError

from ocr_service.engine.device import check_device
from ocr_service.logs import configure_logging
from ocr_service.settings import Settings, production_problems


def check_writable_folders(settings: Settings) -> None:
    """Every folder the service writes must be creatable and writable by the user it runs as.

    In the image that user is not root and the code folder is read-only: a relative or
    unmounted path would otherwise fail deep in start-up, or only on the first training job.
    """
    folders = {"OCR_MODELS_DIR": settings.models_dir, "OCR_TRAINING_DIR": settings.training_dir}
    for name, folder in folders.items():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"{name}={folder} cannot be created by user {os.getuid()}: {exc.strerror}") from exc
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"{name}={folder} is not writable by user {os.getuid()}: mount a volume it owns there")
    try:
        tempfile.gettempdir()
    except FileNotFoundError as exc:
        raise ValueError(f"no writable folder for temporary files: set TMPDIR ({exc})") from exc


def _settings() -> Settings | None:
    try:
        settings = Settings()
        settings.check_memory_budget()
        check_writable_folders(settings)
        check_device(settings.kraken_device)
    except (ValidationError, ValueError) as exc:
        print(f"The OCR service cannot start; fix its settings (OCR_*):\n{exc}", file=sys.stderr)
        return None
    problems = production_problems(settings)
    if problems:
        print(
            "The OCR service cannot start in production (OCR_ENV=production):", *problems, sep="\n  ", file=sys.stderr
        )
        return None
    return settings


def check_models(settings: Settings) -> int:
    """Exit 0 with the store ready to serve, 1 where it cannot (the reason on stderr)."""
    from ocr_service.model_check import ModelStoreError, check_model_store

    try:
        path = check_model_store(settings)
    except ModelStoreError as exc:
        print(f"The OCR service cannot start: {exc}", file=sys.stderr)
        return 1
    print(f"model store {settings.models_dir}: ready (segmentation model {path})", flush=True)
    return 0


def main(argv: list[str]) -> int:
    if argv and argv[0] == "models":
        # `python -m ocr_service models …`: manage the model store, start no server
        from ocr_service.cli import main as models_main

        return models_main(argv[1:])
    if argv and argv[0] not in ("check-models",):
        print(f"unknown command {argv[0]!r}; usage: python -m ocr_service [models … | check-models]", file=sys.stderr)
        return 2
    settings = _settings()
    if settings is None:
        return 2
    configure_logging(settings.log_level, settings.log_json)
    if argv:
        return check_models(settings)
    return serve(settings)


def serve(settings: Settings) -> int:
    from ocr_service.app import create_app, create_management_app

    app = create_app(settings)
    public = uvicorn.Server(
        uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=30)
    )
    management = uvicorn.Server(
        uvicorn.Config(
            create_management_app(app.state.services),
            host=settings.management_host,
            port=settings.management_port,
            log_config=None,
            access_log=False,
            # The public app's lifespan starts and stops the workers; this one has none of its own.
            lifespan="off",
        )
    )
    failed: list[str] = []

    def run_management() -> None:
        try:
            management.run()
        finally:
            if not management.started:
                # Its port taken (uvicorn logged why): a service Prometheus cannot scrape is
                # stopped, so the container restarts and says so, rather than run unwatched.
                failed.append(f"{settings.management_host}:{settings.management_port}")
                public.should_exit = True

    # As the backend's (backend/__main__.py): the management server in a thread, where uvicorn
    # installs no signal handlers, so a stop signal reaches the public server, whose end ends both.
    thread = threading.Thread(target=run_management, name="management", daemon=True)
    thread.start()
    print(
        f"OCR service on http://{settings.host}:{settings.port}  (models: {settings.models_dir}, "
        f"device {settings.device}; management: http://{settings.management_host}:{settings.management_port})",
        flush=True,
    )
    try:
        public.run()
    except KeyboardInterrupt:
        pass  # uvicorn shut down gracefully, then re-raised Ctrl-C: a normal stop
    finally:
        management.should_exit = True
        thread.join(timeout=10)
    if failed:
        print(f"The OCR service stopped: its management port {failed[0]} could not be served", file=sys.stderr)
        return 1
    return 0 if public.started else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
