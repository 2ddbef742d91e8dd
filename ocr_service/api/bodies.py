"""Request bodies of the model and training routes: read only after the route's checks, bounded.

A route that takes a body reads it itself, with these helpers, instead of declaring it as
a parameter: FastAPI reads and parses declared bodies *before* the dependencies run, so the
training token (and the training-busy check) would come after a 100 MB body had arrived.

- :func:`receive_form` streams a ``multipart/form-data`` upload with python-multipart's
  parser: the file part goes chunk by chunk into a sink on disk (written off the event
  loop), the few text fields are kept, each bounded; nothing else is accepted.
- :func:`read_json` reads a small JSON document up to a byte cap and validates it.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, TypeVar, cast

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ocr_service.errors import AppError, ErrorCode

# A part's headers (Content-Disposition, Content-Type) are a few hundred bytes in practice.
MAX_PART_HEADER_BYTES = 8 * 1024
# The bodies of PUT /models/default and /models/segmentation: {"name": "..."}.
MAX_JSON_BYTES = 4 * 1024

Model = TypeVar("Model", bound=BaseModel)


class FileSink(Protocol):
    """Where the file part goes; ``write`` may raise an AppError (e.g. over its size limit)."""

    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True)
class FormShape:
    """The fields a form may carry: one file, some text fields, each field at most once."""

    file_field: str
    text_fields: frozenset[str]
    required: frozenset[str]
    # Told to a client that sends no form or no file, e.g. "Send ... as 'file'."
    usage: str
    max_field_bytes: int = 1024


@dataclass
class _Form:
    shape: FormShape
    fields: dict[str, str] = field(default_factory=dict)
    has_file: bool = False
    pending: list[bytes] = field(default_factory=list)
    _header_name: bytearray = field(default_factory=bytearray)
    _header_value: bytearray = field(default_factory=bytearray)
    _header_bytes: int = 0
    _disposition: bytes = b""
    _part: str | None = None
    _is_file: bool = False
    _data: bytearray = field(default_factory=bytearray)

    def on_part_begin(self) -> None:
        self._disposition = b""
        self._part = None
        self._is_file = False
        self._header_bytes = 0
        self._data = bytearray()

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise AppError(ErrorCode.INVALID_REQUEST, "A part of the multipart form has too long headers.")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name = bytearray()
        self._header_value = bytearray()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name", b"").decode("latin-1")
        shape = self.shape
        if name == shape.file_field:
            if self.has_file:
                raise AppError(ErrorCode.INVALID_REQUEST, f"Send exactly one file as '{shape.file_field}'.")
            self.has_file = True
            self._is_file = True
        elif name in shape.text_fields and name not in self.fields:
            self._is_file = False
        else:
            allowed = ", ".join(f"'{n}'" for n in sorted({shape.file_field, *shape.text_fields}))
            raise AppError(
                ErrorCode.INVALID_REQUEST,
                f"Unexpected or repeated form field '{name[:64]}'; this form takes {allowed}, each once.",
            )
        self._part = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            # written to disk by receive_form, off the event loop
            self.pending.append(bytes(data[start:end]))
            return
        self._data += data[start:end]
        if len(self._data) > self.shape.max_field_bytes:
            raise AppError(ErrorCode.INVALID_REQUEST, f"The form field '{self._part}' is too long.")

    def on_part_end(self) -> None:
        if self._part is not None and not self._is_file:
            try:
                self.fields[self._part] = self._data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise AppError(ErrorCode.INVALID_REQUEST, f"The form field '{self._part}' is not UTF-8 text.") from exc


def _boundary(request: Request, usage: str) -> bytes:
    media_type, params = parse_options_header(request.headers.get("content-type", ""))
    if media_type != b"multipart/form-data":
        raise AppError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, usage)
    boundary = params.get(b"boundary")
    if not boundary:
        raise AppError(ErrorCode.INVALID_REQUEST, "The multipart form has no boundary.")
    return boundary


async def receive_form(request: Request, shape: FormShape, sink: FileSink) -> dict[str, str]:
    """Stream the form's file into ``sink``; the text fields come back. Raises AppError (4xx)."""
    form = _Form(shape)
    parser = MultipartParser(
        _boundary(request, shape.usage),
        {
            "on_part_begin": form.on_part_begin,
            "on_part_data": form.on_part_data,
            "on_part_end": form.on_part_end,
            "on_header_field": form.on_header_field,
            "on_header_value": form.on_header_value,
            "on_header_end": form.on_header_end,
            "on_headers_finished": form.on_headers_finished,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if form.pending:
                data = b"".join(form.pending)
                form.pending.clear()
                await asyncio.to_thread(sink.write, data)
        parser.finalize()
    except MultipartParseError as exc:
        raise AppError(ErrorCode.INVALID_REQUEST, f"The multipart form is malformed: {exc}") from exc
    if not form.has_file:
        raise AppError(ErrorCode.INVALID_REQUEST, shape.usage)
    for name in sorted(shape.required - form.fields.keys()):
        raise AppError(ErrorCode.INVALID_REQUEST, f"The field '{name}' is required.")
    return form.fields


class DiskSpool:
    """An upload on disk in ``directory``, cut off at ``max_bytes`` (413 REQUEST_TOO_LARGE).

    The file is unlinked from the start (``TemporaryFile``): whatever happens, even a crash,
    it leaves nothing behind, and it fills the folder the operator sized for it, not /tmp.
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        # a BufferedRandom at run time; typeshed types TemporaryFile as the wider IO[bytes]
        self.file = cast(BinaryIO, tempfile.TemporaryFile(dir=directory))
        self.max_bytes = max_bytes
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.max_bytes:
            raise _too_large(self.max_bytes)
        self.file.write(data)

    def __enter__(self) -> DiskSpool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.file.close()


def _too_large(limit: int) -> AppError:
    return AppError(
        ErrorCode.REQUEST_TOO_LARGE,
        f"The request body is larger than the limit of {limit} bytes.",
        details={"maxBytes": limit},
    )


async def read_json(request: Request, model: type[Model], max_bytes: int = MAX_JSON_BYTES) -> Model:
    """The body as ``model``; refused unread past ``max_bytes`` (413), malformed (400), invalid (422)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(max_bytes)
    try:
        return model.model_validate_json(bytes(body))
    except ValidationError as exc:
        # The one handler of validation errors words it (MALFORMED_JSON or INVALID_REQUEST).
        raise RequestValidationError(exc.errors()) from exc
