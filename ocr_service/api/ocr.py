"""POST /ocr and POST /ocr/stream: the same input, all pages at once or NDJSON as it goes."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile

from ocr_service.api.deps import ServicesDep
from ocr_service.engine.pipeline import Line
from ocr_service.errors import AppError, ErrorCode
from ocr_service.ocr import NO_MODEL_NOTICE, OcrInput, OcrRun, PageDone, PageStarted

log = logging.getLogger(__name__)
router = APIRouter()


class OcrJsonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    documentUrl: str = Field(min_length=1, max_length=4096)  # noqa: N815 - the contract is camelCase
    model: str | None = Field(None, max_length=64)


async def read_ocr_input(request: Request, max_bytes: int) -> OcrInput:
    """Either JSON ``{"documentUrl", "model"?}`` or multipart ``file`` (+ ``model``)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        raw = await request.body()
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise AppError(ErrorCode.MALFORMED_JSON, "The request body is not valid JSON.") from exc
        try:
            body = OcrJsonRequest.model_validate(payload)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            raise AppError(ErrorCode.INVALID_REQUEST, f"The request is not valid: {problems}") from exc
        return OcrInput(url=body.documentUrl, model=body.model or None)
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=4)
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise AppError(ErrorCode.INVALID_REQUEST, "Send the document as the multipart field 'file'.")
            data = await upload.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise AppError(
                    ErrorCode.DOCUMENT_TOO_LARGE,
                    f"The document is larger than the limit of {max_bytes / 1024 / 1024:g} MB.",
                )
            model = form.get("model")
            if model is not None and not isinstance(model, str):
                raise AppError(ErrorCode.INVALID_REQUEST, "The field 'model' must be text.")
            return OcrInput(data=data, model=model or None)
        finally:
            await form.close()
    raise AppError(
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        "Send JSON with a documentUrl, or a multipart form with the document as 'file'.",
    )


def line_json(line: Line) -> dict[str, Any]:
    return {
        "index": line.index,
        "text": line.text,
        "confidence": line.confidence,
        "baseline": line.baseline,
        "polygon": line.polygon,
        "bbox": line.bbox,
    }


def _summary(run: OcrRun) -> dict[str, Any]:
    # Which models made this text: the backend keeps it with the lines it stores.
    summary: dict[str, Any] = {
        "model": run.model_name,
        "modelVersion": run.model.version if run.model else None,
        "segmentationModel": run.segmentation_model.name,
        "segmentationModelVersion": run.segmentation_model.version,
    }
    if run.model is None:
        summary["notice"] = NO_MODEL_NOTICE
    return summary


@router.post("/ocr")
async def ocr(request: Request, services: ServicesDep) -> JSONResponse:
    request_input = await read_ocr_input(request, services.settings.max_document_bytes)
    run = await services.ocr.start(request_input)
    try:
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
    finally:
        run.close()
    return JSONResponse({"pages": pages, **_summary(run)})


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
    finally:
        run.close()


@router.post("/ocr/stream")
async def ocr_stream(request: Request, services: ServicesDep) -> StreamingResponse:
    request_input = await read_ocr_input(request, services.settings.max_document_bytes)
    run = await services.ocr.start(request_input)
    # The background task releases the run even if the client leaves before the first byte.
    return StreamingResponse(
        _stream(run),
        media_type="application/x-ndjson",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        background=BackgroundTask(run.close),
    )
