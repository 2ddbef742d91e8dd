"""Training and model-administration calls, and how documents travel: no retry, no breaker,
one time limit.

A training job must never be started twice by a retry, and an admin starting one, or choosing
the model the archive is read with, wants the service's own answer (409 busy, 422 bad data,
404 no such model) at once, not after a back-off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote

import httpx

from backend.ocr_client.answers import Json, error_of
from backend.ocr_client.config import OcrClientConfig
from backend.ocr_client.errors import OcrRejected, OcrUnavailable, Unavailability

# A path is opened per attempt; an open file is sent from its start on every attempt
# (httpx seeks to 0), in 64 KB chunks either way — never read whole into memory.
DocumentSource = Path | IO[bytes]


@dataclass(frozen=True)
class TrainingRequest:
    model_name: str
    base_model: str | None = None
    epochs: int | None = None
    spec: str | None = None
    learning_rate: float | None = None

    def fields(self) -> dict[str, str]:
        values = {
            "modelName": self.model_name,
            "baseModel": self.base_model,
            "epochs": self.epochs,
            "spec": self.spec,
            "learningRate": self.learning_rate,
        }
        return {name: str(value) for name, value in values.items() if value is not None}


class TrainingCalls:
    def __init__(self, config: OcrClientConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        self._http = http
        self._base = (config.training_url or config.urls[0]).rstrip("/")

    async def submit(self, path: str, training_zip: DocumentSource, request: TrainingRequest) -> Json:
        return await self._call("POST", path, document=training_zip, data=request.fields())

    async def jobs(self) -> Json:
        return await self._call("GET", "/train/jobs")

    async def job(self, job_id: str) -> Json:
        return await self._call("GET", f"/train/jobs/{quote(job_id, safe='')}")

    async def cancel(self, job_id: str) -> Json:
        return await self._call("DELETE", f"/train/jobs/{quote(job_id, safe='')}")

    async def choose(self, path: str, name: str | None) -> Json:
        """``PUT /models/default`` or ``/models/segmentation`` with ``{"name"}`` (None: the service's setting)."""
        return await self._call("PUT", path, json={"name": name})

    async def _call(
        self,
        method: str,
        path: str,
        *,
        document: DocumentSource | None = None,
        data: dict[str, str] | None = None,
        json: Json | None = None,
    ) -> Json:
        token = self._config.training_token
        headers = {"X-Training-Token": token} if token else {}
        limit = self._config.training_timeout_s
        try:
            async with asyncio.timeout(limit):
                with opened(document) as file:
                    response = await self._http.request(
                        method,
                        self._base + path,
                        data=data,
                        json=json,
                        files=files_of(file),
                        headers=headers,
                        timeout=limit,
                    )
        except (httpx.HTTPError, TimeoutError) as exc:
            raise OcrUnavailable(
                Unavailability.CONNECTION, f"The OCR service's training could not be reached ({type(exc).__name__})."
            ) from exc
        if not response.is_success:
            code, message = error_of(response.status_code, response.content)
            if response.status_code < 500:
                raise OcrRejected(response.status_code, code, message)
            raise OcrUnavailable(Unavailability.SERVER_ERROR, message, code=code)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise OcrUnavailable(Unavailability.SERVER_ERROR, "The OCR service's answer is not a JSON object.")
        return body


def files_of(file: IO[bytes] | None) -> dict[str, tuple[str, IO[bytes], str]] | None:
    if file is None:
        return None
    # An anonymous temporary file's name is its descriptor (an int), not a path.
    named = getattr(file, "name", None)
    name = Path(named).name if isinstance(named, str) and named else "document"
    return {"file": (name, file, "application/octet-stream")}


@contextmanager
def opened(document: DocumentSource | None) -> Iterator[IO[bytes] | None]:
    if isinstance(document, Path):
        with document.open("rb") as file:
            yield file
    else:
        yield document
