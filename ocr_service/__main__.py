"""``python -m ocr_service``: validate the settings, then serve the OCR API."""

from __future__ import annotations

import os
import sys
import tempfile

import uvicorn
from pydantic import ValidationError

from ocr_service.logs import configure_logging
from ocr_service.settings import Settings


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


def main(argv: list[str]) -> int:
    if argv and argv[0] == "models":
        # `python -m ocr_service models …`: manage the model store, start no server
        from ocr_service.cli import main as models_main

        return models_main(argv[1:])
    try:
        settings = Settings()
        settings.check_memory_budget()
        check_writable_folders(settings)
    except (ValidationError, ValueError) as exc:
        print(f"The OCR service cannot start; fix its settings (OCR_*):\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_json)
    from ocr_service.app import create_app

    app = create_app(settings)
    print(f"OCR service on http://{settings.host}:{settings.port}  (models: {settings.models_dir})", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, timeout_graceful_shutdown=30)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
