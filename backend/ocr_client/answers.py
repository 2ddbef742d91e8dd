"""Turning the OCR service's HTTP answers into results or the client's typed errors."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import httpx

from backend.ocr_client.breaker import Outcome
from backend.ocr_client.errors import OcrRejected, OcrUnavailable, Unavailability
from backend.ocr_client.replicas import Attempt
from backend.ocr_client.retry import ServerFailureError

Json = dict[str, Any]

# The service's answer to a full queue: back-pressure from a healthy service, so it is retried
# but counts neither for nor against the breaker (a busy replica is not a broken one).
_BUSY_CODE = "SERVICE_BUSY"
_MAX_ERROR_BYTES = 64 * 1024


def error_of(status: int, body: bytes) -> tuple[str, str]:
    """The ``code`` and ``message`` of an error body, or stand-ins for a body that has none."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("code"), str) and isinstance(payload.get("message"), str):
        return payload["code"], payload["message"]
    text = body[:200].decode("utf-8", "replace").strip()
    return f"HTTP_{status}", text or f"The OCR service answered {status}."


async def read_error_body(response: httpx.Response) -> bytes:
    """At most 64 KB of an error body: enough for ``{"code","message"}``, bounded for a proxy's page."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= _MAX_ERROR_BYTES:
            break
    return bytes(body[:_MAX_ERROR_BYTES])


def refuse(status: int, body: bytes, attempt: Attempt) -> NoReturn:
    """Raise the error for an answer that is not a 2xx, and tell the breaker how to count it."""
    code, message = error_of(status, body)
    if 400 <= status < 500:
        attempt.outcome = Outcome.IGNORED
        raise OcrRejected(status, code, message)
    if status >= 500:
        if code == _BUSY_CODE:
            attempt.outcome = Outcome.IGNORED
        raise ServerFailureError(status, code, message)
    raise OcrUnavailable(Unavailability.SERVER_ERROR, f"The OCR service answered an unexpected {status}: {message}")


def json_of(response: httpx.Response, attempt: Attempt) -> Json:
    if not response.is_success:
        refuse(response.status_code, response.content, attempt)
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        attempt.outcome = Outcome.FAILURE
        raise OcrUnavailable(
            Unavailability.SERVER_ERROR, "The OCR service answered with a body that is not a JSON object."
        )
    return payload
