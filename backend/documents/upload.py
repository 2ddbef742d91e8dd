"""Reading an upload's multipart body with a byte limit enforced while it arrives.

The file part is spooled to a temporary file by Starlette's parser (1 MB in memory at most);
the limit is checked on the declared Content-Length before anything is read and on every
chunk as it arrives, so an oversized upload is cut off, not stored.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.types import Message

from backend.errors import AppError, ErrorCode

# Multipart framing and the text fields around the file.
_SLACK = 64 * 1024
_TEXT_FIELDS = ("title", "writer", "date")
Fields = TypeVar("Fields", bound=BaseModel)


def _too_large(max_bytes: int, code: ErrorCode) -> AppError:
    return AppError(code, f"The file is larger than {max_bytes} bytes.")


async def read_upload_form(
    request: Request, max_bytes: int, too_large: ErrorCode = ErrorCode.DOCUMENT_TOO_LARGE
) -> FormData:
    """The form, its file spooled; more than ``max_bytes`` is cut off with ``too_large`` (413)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise AppError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "Send the document as multipart/form-data.")
    limit = max_bytes + _SLACK
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(max_bytes, too_large)
    received = 0
    receive = request.receive

    async def limited_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _too_large(max_bytes, too_large)
        return message

    limited = Request(request.scope, limited_receive)
    return await limited.form(max_files=1, max_fields=len(_TEXT_FIELDS) + 1, max_part_size=16 * 1024)


def upload_parts(form: FormData, model: type[Fields]) -> tuple[UploadFile, Fields]:
    """The file and the text fields validated as ``model``; anything else in the form is refused."""
    unknown = set(form.keys()) - {"file", *_TEXT_FIELDS}
    if unknown:
        raise AppError(ErrorCode.INVALID_REQUEST, f"Unknown form fields: {', '.join(sorted(unknown))}.")
    files = form.getlist("file")
    if len(files) != 1 or not isinstance(files[0], UploadFile):
        raise AppError(ErrorCode.INVALID_REQUEST, "Send exactly one file in the form field 'file'.")
    values: dict[str, Any] = {}
    for name in _TEXT_FIELDS:
        given = form.getlist(name)
        if len(given) > 1 or (given and not isinstance(given[0], str)):
            raise AppError(ErrorCode.INVALID_REQUEST, f"Send the form field {name!r} once, as text.")
        text = given[0] if given and isinstance(given[0], str) else None
        if text is not None and (name == "title" or text.strip()):
            values[name] = text
    try:
        fields = model.model_validate(values)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("form", *e["loc"])} for e in exc.errors()]) from exc
    return files[0], fields
