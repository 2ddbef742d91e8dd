"""The backend's resilient client of the OCR service: retry ∘ circuit breaker ∘ time limit.

See ../shared/RESILIENCE.md for the semantics it matches (Resilience4j's) and the traps of
pybreaker and tenacity it avoids.
"""

from backend.ocr_client.breaker import BreakerSnapshot, BreakerState
from backend.ocr_client.client import OcrClient, OcrClientState
from backend.ocr_client.config import BreakerConfig, OcrClientConfig
from backend.ocr_client.errors import (
    OcrClientError,
    OcrRejected,
    OcrStreamError,
    OcrStreamInterrupted,
    OcrUnavailable,
    Unavailability,
)
from backend.ocr_client.stream import PageStream
from backend.ocr_client.training import DocumentSource, TrainingRequest

__all__ = [
    "BreakerConfig",
    "BreakerSnapshot",
    "BreakerState",
    "DocumentSource",
    "OcrClient",
    "OcrClientConfig",
    "OcrClientError",
    "OcrClientState",
    "OcrRejected",
    "OcrStreamError",
    "OcrStreamInterrupted",
    "OcrUnavailable",
    "PageStream",
    "TrainingRequest",
    "Unavailability",
]
