"""What a caller of the OCR client can get instead of a result.

``OcrRejected`` is the document's or the request's fault (a 4xx from the OCR service):
fail that document with the service's code and message, do not try again.
``OcrUnavailable`` means the service could not answer now (breaker open, retries used up,
deadline passed, stream broken): the backend answers 503 ``OCR_SERVICE_UNAVAILABLE`` and a
job may be tried again later.
"""

from __future__ import annotations

from enum import StrEnum


class OcrClientError(Exception):
    """Root of the client's errors; ``code`` and ``message`` follow the services' error bodies."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class OcrRejected(OcrClientError):  # noqa: N818 - the name the backend's spec uses
    """The OCR service refused the request with a 4xx and its own code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code, message)
        self.status = status


class OcrStreamError(OcrClientError):
    """A stream ended with the service's own ``{"type":"error"}`` line (after its 200)."""


class Unavailability(StrEnum):
    CIRCUIT_OPEN = "circuit_open"
    RETRIES_EXHAUSTED = "retries_exhausted"
    DEADLINE = "deadline"
    STREAM_INTERRUPTED = "stream_interrupted"
    SERVER_ERROR = "server_error"
    CONNECTION = "connection"


class OcrUnavailable(OcrClientError):  # noqa: N818 - the name the backend's spec uses
    """The OCR service could not be used now; ``reason`` says why, ``code`` is the service's
    own code when it answered (e.g. ``MODELS_NOT_READY``), else ``OCR_SERVICE_UNAVAILABLE``."""

    def __init__(self, reason: Unavailability, message: str, code: str = "OCR_SERVICE_UNAVAILABLE") -> None:
        super().__init__(code, message)
        self.reason = reason


class OcrStreamInterrupted(OcrUnavailable):
    """A stream broke after it had delivered lines; never retried from the middle — the job
    resumes at the first page not stored."""

    def __init__(self, message: str, reason: Unavailability = Unavailability.STREAM_INTERRUPTED) -> None:
        super().__init__(reason, message)
