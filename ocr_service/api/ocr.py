"""POST /ocr and POST /ocr/stream: the same input, all pages at once or NDJSON as it goes.

Both routes take their place in the queue when the headers have arrived, before the body is
read (a full service answers 503 at once, not after a 100 MB upload), and both give back
everything (pages in the pool, the document, the spooled upload, the place) when the client
hangs up.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from ocr_service.api.deps import Services, ServicesDep
from ocr_service.api.disconnect import ClientGoneError, unless_client_leaves
from ocr_service.api.ocr_input import BodyKind, body_kind, read_json, read_upload
from ocr_service.engine.pipeline import Line
from ocr_service.errors import AppError, ErrorCode
from ocr_service.ocr import NO_MODEL_NOTICE, OcrRun, PageDone, PageStarted

log = logging.getLogger(__name__)
router = APIRouter()


def line_json(line: Line) -> dict[str, Any]:
    return {
        "index": line.index,
        "text": line.text,
        "confidence": line.confidence,
        "baseline": line.baseline,
        "polygon": line.polygon,
        "bbox": line.bbox,
    }


def _models(run: OcrRun) -> dict[str, Any]:
    # Which models made this text (pinned when the document started, so the same on every page):
    # the backend keeps it with the lines it stores, page by page.
    return {
        "model": run.model_name,
        "modelVersion": run.model.version if run.model else None,
        "segmentationModel": run.segmentation_model.name,
        "segmentationModelVersion": run.segmentation_model.version,
    }


def _summary(run: OcrRun) -> dict[str, Any]:
    summary = _models(run)
    if run.model is None:
        summary["notice"] = NO_MODEL_NOTICE
    return summary


# Nobody reads this answer: the client closed the connection (nginx's "client closed request").
CLIENT_GONE = 499


async def _admit_and_start(request: Request, services: Services, cleanup: AsyncExitStack) -> OcrRun:
    """Admit, read the body, open the document: each step's clean-up goes onto ``cleanup``."""
    max_bytes = services.settings.max_document_bytes
    kind = body_kind(request, max_bytes)
    cleanup.callback(services.ocr.admit().release)
    timeout_s = services.settings.body_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            if kind is BodyKind.JSON:
                request_input = await read_json(request)
            else:
                request_input = await read_upload(request, max_bytes, cleanup)
    except TimeoutError as exc:
        raise AppError(
            ErrorCode.BODY_TIMEOUT,
            f"The request body did not arrive within {timeout_s:g} s (OCR_BODY_TIMEOUT_S); its place in the "
            "queue was given to the next document.",
        ) from exc
    run = await unless_client_leaves(request, services.ocr.start(request_input))
    cleanup.push_async_callback(run.aclose)
    return run


async def _collect(run: OcrRun) -> dict[str, Any]:
    pages = []
    async for event in run.events():
        if isinstance(event, PageDone):
            result = event.result
            pages.append(
                {
                    "page": event.page,
                    "width": result.width,
                    "height": result.height,
                    "lines": [line_json(line) for line in result.lines],
                    "droppedLines": result.dropped_lines,
                }
            )
    return {"pages": pages, **_summary(run)}


@router.post("/ocr")
async def ocr(request: Request, services: ServicesDep) -> Response:
    try:
        async with AsyncExitStack() as cleanup:
            run = await _admit_and_start(request, services, cleanup)
            return JSONResponse(await unless_client_leaves(request, _collect(run)))
    except (ClientGoneError, ClientDisconnect):
        log.info("the client left before its document was read; its pages were cancelled")
        return Response(status_code=CLIENT_GONE)


def _ndjson(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, ensure_ascii=False) + "\n").encode("utf-8")


async def _stream(run: OcrRun) -> AsyncIterator[bytes]:
    lines = 0
    try:
        async for event in run.events():
            if isinstance(event, PageStarted):
                yield _ndjson(
                    {
                        "type": "page",
                        "page": event.page,
                        "pages": event.pages,
                        "width": event.width,
                        "height": event.height,
                        **_models(run),
                    }
                )
            else:
                for line in event.result.lines:
                    lines += 1
                    yield _ndjson({"type": "line", "page": event.page, **line_json(line)})
        yield _ndjson({"type": "done", "pages": run.pages, "lines": lines, **_summary(run)})
    except AppError as exc:
        log.warning("OCR stream ended with %s: %s", exc.code, exc.message)
        yield _ndjson({"type": "error", **exc.body()})
    except Exception:
        log.exception("OCR stream failed")
        yield _ndjson(
            {
                "type": "error",
                "code": ErrorCode.INTERNAL_ERROR.value,
                "message": "Something went wrong inside the OCR service.",
            }
        )


class _RunStream(StreamingResponse):
    """A streaming response that runs its clean-up when it ends, however it ends: a client
    that leaves before the first byte, or in the middle, frees everything like one that stays."""

    def __init__(self, content: AsyncIterator[bytes], cleanup: Callable[[], Awaitable[None]]) -> None:
        super().__init__(
            content, media_type="application/x-ndjson", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._cleanup()


@router.post("/ocr/stream")
async def ocr_stream(request: Request, services: ServicesDep) -> Response:
    try:
        async with AsyncExitStack() as cleanup:
            run = await _admit_and_start(request, services, cleanup)
            # From here on the response owns the clean-up: it ends when the stream ends.
            return _RunStream(_stream(run), cleanup.pop_all().aclose)
    except (ClientGoneError, ClientDisconnect):
        log.info("the client left before its document was read; its pages were cancelled")
        return Response(status_code=CLIENT_GONE)
