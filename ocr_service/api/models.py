"""/models: list, describe, upload, choose the default and the segmentation model, remove.

Changes need the training token.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from ocr_service.api.auth import TrainingTokenDep
from ocr_service.errors import AppError, ErrorCode
from ocr_service.models_admin import InstallRequest, ModelAdmin, StagedFile

router = APIRouter()

_FORM_FIELDS = frozenset({"name", "replace", "default"})
_MAX_FIELD_BYTES = 1024


def get_model_admin(request: Request) -> ModelAdmin:
    admin: ModelAdmin = request.app.state.model_admin
    return admin


ModelAdminDep = Annotated[ModelAdmin, Depends(get_model_admin)]


class _UploadForm:
    """Streams a multipart upload: the ``file`` part straight into the staging file, never to
    a temporary file outside the store (as Starlette's form parser would spool it)."""

    def __init__(self, staged: StagedFile) -> None:
        self.staged = staged
        self.fields: dict[str, str] = {}
        self.has_file = False
        self.pending: list[bytes] = []
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._part: str | None = None
        self._is_file = False
        self._data = bytearray()

    def on_part_begin(self) -> None:
        self._disposition = b""
        self._part = None
        self._is_file = False
        self._data = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name", b"").decode("latin-1")
        if name == "file":
            if self.has_file:
                raise AppError(ErrorCode.INVALID_REQUEST, "Send exactly one model file.")
            self.has_file = True
            self._is_file = True
        elif name in _FORM_FIELDS and name not in self.fields:
            self._is_file = False
        else:
            raise AppError(
                ErrorCode.INVALID_REQUEST,
                f"Unexpected form field '{name}'; send 'file', 'name' and optionally 'replace' and 'default'.",
            )
        self._part = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            # written to disk by the caller, off the event loop
            self.pending.append(bytes(data[start:end]))
            return
        self._data += data[start:end]
        if len(self._data) > _MAX_FIELD_BYTES:
            raise AppError(ErrorCode.INVALID_REQUEST, f"The form field '{self._part}' is too long.")

    def on_part_end(self) -> None:
        if self._part is not None and not self._is_file:
            try:
                self.fields[self._part] = self._data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise AppError(ErrorCode.INVALID_REQUEST, f"The form field '{self._part}' is not UTF-8 text.") from exc


async def receive_model_upload(request: Request, staged: StagedFile) -> dict[str, str]:
    """Read the multipart body into ``staged``; the other fields come back as text."""
    media_type, params = parse_options_header(request.headers.get("content-type", ""))
    if media_type != b"multipart/form-data":
        raise AppError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            "Send a multipart form with the model as 'file' and its name as 'name'.",
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise AppError(ErrorCode.INVALID_REQUEST, "The multipart form has no boundary.")
    form = _UploadForm(staged)
    parser = MultipartParser(
        boundary,
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
                await asyncio.to_thread(staged.write, data)
        parser.finalize()
    except MultipartParseError as exc:
        raise AppError(ErrorCode.INVALID_REQUEST, f"The multipart form is malformed: {exc}") from exc
    if not form.has_file:
        raise AppError(ErrorCode.INVALID_REQUEST, "Send the model file as the multipart field 'file'.")
    if "name" not in form.fields:
        raise AppError(ErrorCode.INVALID_REQUEST, "Send the model's name as the multipart field 'name'.")
    return form.fields


def _flag(fields: dict[str, str], key: str) -> bool:
    value = fields.get(key, "").strip().lower()
    if value in ("", "false", "0", "no"):
        return False
    if value in ("true", "1", "yes"):
        return True
    raise AppError(ErrorCode.INVALID_REQUEST, f"The field '{key}' must be true or false.")


@router.get("/models")
def list_models(admin: ModelAdminDep) -> dict[str, Any]:
    # A plain `def` (it reads the store's files). It never loads a model: a file placed by hand
    # is listed as "checking" and inspected in the background, once, one file at a time.
    return {
        "models": admin.entries(),
        "default": admin.store.default_model,
        "segmentationModel": admin.store.segmentation_name,
    }


@router.get("/models/{name}")
def get_model(name: str, admin: ModelAdminDep) -> dict[str, Any]:
    return admin.describe(name)


@router.post("/models", status_code=201)
async def install_model(request: Request, admin: ModelAdminDep, _: TrainingTokenDep) -> JSONResponse:
    with admin.staging() as staged:
        fields = await receive_model_upload(request, staged)
        install = InstallRequest(
            name=fields["name"].strip(),
            replace=_flag(fields, "replace"),
            make_default=_flag(fields, "default"),
        )
        description = await asyncio.to_thread(admin.install_staged, staged, install, source="uploaded")
    return JSONResponse(description, status_code=201)


class ModelChoice(BaseModel):
    """``{"name": ...}``: a model of the store, or null for the operator's setting."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(..., max_length=64)


@router.put("/models/default")
def set_default_model(body: ModelChoice, admin: ModelAdminDep, _: TrainingTokenDep) -> dict[str, Any]:
    return admin.set_default(body.name)


@router.put("/models/segmentation")
def set_segmentation_model(body: ModelChoice, admin: ModelAdminDep, _: TrainingTokenDep) -> dict[str, Any]:
    """The segmentation model /ocr finds lines with; null goes back to OCR_SEGMENTATION_MODEL."""
    return admin.set_segmentation(body.name)


@router.delete("/models/{name}", status_code=204)
def remove_model(name: str, admin: ModelAdminDep, _: TrainingTokenDep) -> Response:
    # Documents being read with the model finish with their pinned copy of its file.
    admin.remove(name)
    return Response(status_code=204)
