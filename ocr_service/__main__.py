"""``python -m ocr_service``: validate the settings, then serve the OCR API."""

from __future__ import annotations

import sys

import uvicorn
from pydantic import ValidationError

from ocr_service.logs import configure_logging
from ocr_service.settings import Settings


def main(argv: list[str]) -> int:
    if argv and argv[0] == "models":
        # `python -m ocr_service models …`: manage the model store, start no server
        from ocr_service.cli import main as models_main

        return models_main(argv[1:])
    try:
        settings = Settings()
        settings.check_memory_budget()
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
