"""The events of ``/ocr/stream`` as an async iterator, within the call's deadline.

Nothing here is retried: once the service has answered 200, every failure ends the stream
with :class:`OcrStreamInterrupted` and the job resumes at the first page it has not stored.
The deadline is applied inside each ``__anext__`` (never around a ``yield``), so it can only
cut a read from the service, never the caller's own work between two events.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from backend.ocr_client.errors import OcrStreamError, OcrStreamInterrupted, Unavailability

Json = dict[str, Any]


class PageStream:
    """Yields ``{"type":"page"|"line"|"done", ...}``; ``done`` is the last one. The service's
    own ``{"type":"error"}`` line is raised as :class:`OcrStreamError`."""

    def __init__(self, response: httpx.Response, deadline: float) -> None:
        self._lines: AsyncIterator[str] = response.aiter_lines()
        self._deadline = deadline
        self._finished = False
        self.delivered = 0

    def __aiter__(self) -> PageStream:
        return self

    async def __anext__(self) -> Json:
        if self._finished:
            raise StopAsyncIteration
        self._finished = True  # until this event turns out to be a good one
        line = await self._next_line()
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise OcrStreamInterrupted(f"The OCR service sent a line that is not an event after {self._progress()}.")
        if event["type"] == "error":
            code, message = event.get("code"), event.get("message")
            raise OcrStreamError(
                code if isinstance(code, str) else "OCR_STREAM_ERROR",
                message if isinstance(message, str) else "The OCR service could not finish the document.",
            )
        self._finished = event["type"] == "done"
        self.delivered += 1
        return event

    async def _next_line(self) -> str:
        try:
            async with asyncio.timeout_at(self._deadline):
                line = ""
                while not line.strip():
                    line = await anext(self._lines)
                return line
        except StopAsyncIteration:
            raise OcrStreamInterrupted(
                f"The OCR service ended the stream without finishing the document, after {self._progress()}."
            ) from None
        except TimeoutError as exc:
            raise OcrStreamInterrupted(
                f"The OCR stream passed its deadline after {self._progress()}.", reason=Unavailability.DEADLINE
            ) from exc
        except httpx.HTTPError as exc:
            raise OcrStreamInterrupted(
                f"The connection to the OCR service broke after {self._progress()} ({type(exc).__name__})."
            ) from exc

    def _progress(self) -> str:
        return f"{self.delivered} event{'s' if self.delivered != 1 else ''}"
