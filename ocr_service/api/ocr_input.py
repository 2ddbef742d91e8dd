"""The body of ``/ocr`` and ``/ocr/stream``: a small JSON object, or a multipart upload spooled to disk.

Nothing here is read before the document is admitted (the routes ask first); the sizes are
checked against the declared ``Content-Length`` before any byte is read, and counted again
while the body streams in, so a body over its limit is cut off where it crosses it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from ocr_service.errors import AppError, ErrorCode
from ocr_service.ocr import OcrInput
from ocr_service.page_range import FIRST_PAGE, LAST_PAGE, PageRange

# {"documentUrl": up to 4096 characters, "model": up to 64, two page numbers}: 4 KB more than
# holds the contract.
MAX_JSON_BYTES = 8 * 1024
# Multipart framing around the document (boundaries, part headers, the 'model' field) is small;
# this slack keeps a file of exactly the document limit from being refused by the body cap.
MULTIPART_SLACK = 64 * 1024
# The text fields ('model': a model name is at most 64 characters; two page numbers).
MAX_FIELD_BYTES = 1024
TEXT_FIELDS = ("model", FIRST_PAGE, LAST_PAGE)


class BodyKind(Enum):
    JSON = "json"
    MULTIPART = "multipart"


class OcrJsonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    documentUrl: str = Field(min_length=1, max_length=4096)  # noqa: N815 - the contract is camelCase
    model: str | None = Field(None, max_length=64)
    # Checked by PageRange (422 INVALID_PAGE_RANGE, like the multipart fields), not by pydantic.
    firstPage: JsonValue = None  # noqa: N815
    lastPage: JsonValue = None  # noqa: N815


def document_too_large(max_bytes: int) -> AppError:
    return AppError(
        ErrorCode.DOCUMENT_TOO_LARGE,
        f"The document is larger than the limit of {max_bytes / 1024 / 1024:g} MB.",
        details={"maxBytes": max_bytes},
    )


def json_too_large() -> AppError:
    return AppError(
        ErrorCode.REQUEST_TOO_LARGE,
        f"A JSON request to /ocr holds only documentUrl, model, firstPage and lastPage; it is at most "
        f"{MAX_JSON_BYTES} bytes.",
        details={"maxBytes": MAX_JSON_BYTES},
    )


def body_kind(request: Request, max_document_bytes: int) -> BodyKind:
    """What the body is, from the headers alone; refuses a body declared too large for it."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        kind, cap, too_large = BodyKind.JSON, MAX_JSON_BYTES, json_too_large()
    elif content_type == "multipart/form-data":
        kind, cap, too_large = BodyKind.MULTIPART, max_document_bytes + MULTIPART_SLACK, None
    else:
        raise AppError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            "Send JSON with a documentUrl, or a multipart form with the document as 'file'.",
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise too_large or document_too_large(max_document_bytes)
    return kind


async def _capped(request: Request, cap: int, too_large: AppError) -> AsyncGenerator[bytes, None]:
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > cap:
            raise too_large
        yield chunk


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are each given once: json.loads would keep the last of two
    ``firstPage`` silently, where the multipart reader refuses a repeated field."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            code = ErrorCode.INVALID_PAGE_RANGE if key in (FIRST_PAGE, LAST_PAGE) else ErrorCode.INVALID_REQUEST
            raise AppError(code, f"The key '{key[:64]}' was sent more than once.")
        result[key] = value
    return result


async def read_json(request: Request) -> OcrInput:
    raw = b"".join([chunk async for chunk in _capped(request, MAX_JSON_BYTES, json_too_large())])
    try:
        payload = json.loads(raw, object_pairs_hook=_no_repeated_keys)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AppError(ErrorCode.MALFORMED_JSON, "The request body is not valid JSON.") from exc
    try:
        body = OcrJsonRequest.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise AppError(ErrorCode.INVALID_REQUEST, f"The request is not valid: {problems}") from exc
    pages = PageRange.of(body.firstPage, body.lastPage, text=False)
    return OcrInput(url=body.documentUrl, model=body.model or None, pages=pages)


async def read_upload(request: Request, max_document_bytes: int, cleanup: AsyncExitStack) -> OcrInput:
    """Spool the multipart ``file`` to disk as it arrives (Starlette's parser keeps at most
    1 MB of it in memory); ``cleanup`` closes, and so removes, the spooled file."""
    stream = _capped(request, max_document_bytes + MULTIPART_SLACK, document_too_large(max_document_bytes))
    # The text fields each once, and one spare: a repeated field is refused by name below.
    parser = MultiPartParser(
        request.headers, stream, max_files=1, max_fields=len(TEXT_FIELDS) + 1, max_part_size=MAX_FIELD_BYTES
    )
    try:
        # On any failure while parsing (a cut-off body, a client that left) the parser
        # closes the spooled file itself.
        form = await parser.parse()
    except MultiPartException as exc:
        raise AppError(ErrorCode.INVALID_REQUEST, f"The multipart form cannot be read: {exc.message}") from exc
    cleanup.push_async_callback(form.close)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise AppError(ErrorCode.INVALID_REQUEST, "Send the document as the multipart field 'file'.")
    if upload.size is None or upload.size > max_document_bytes:
        raise document_too_large(max_document_bytes)
    for name in TEXT_FIELDS:
        if len(form.getlist(name)) > 1:
            code = ErrorCode.INVALID_REQUEST if name == "model" else ErrorCode.INVALID_PAGE_RANGE
            raise AppError(code, f"The field '{name}' was sent more than once.")
    model = form.get("model")
    if model is not None and not isinstance(model, str):
        raise AppError(ErrorCode.INVALID_REQUEST, "The field 'model' must be text.")
    pages = PageRange.of(form.get(FIRST_PAGE), form.get(LAST_PAGE), text=True)
    return OcrInput(file=upload.file, model=model or None, pages=pages)
