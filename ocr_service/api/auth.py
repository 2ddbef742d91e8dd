"""The training token: ``X-Training-Token``, compared in constant time, failing closed."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header

from ocr_service.api.deps import ServicesDep
from ocr_service.errors import AppError, ErrorCode


def require_training_token(
    services: ServicesDep,
    x_training_token: Annotated[str | None, Header()] = None,
) -> None:
    configured = services.settings.training_token
    if configured is None:
        raise AppError(
            ErrorCode.TRAINING_DISABLED,
            "Training and model management are switched off: no OCR_TRAINING_TOKEN is configured.",
        )
    given = (x_training_token or "").encode("utf-8")
    if not hmac.compare_digest(given, configured.get_secret_value().encode("utf-8")):
        raise AppError(ErrorCode.UNAUTHORIZED, "The X-Training-Token header is missing or wrong.")


TrainingTokenDep = Annotated[None, Depends(require_training_token)]
