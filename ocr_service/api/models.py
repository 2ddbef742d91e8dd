"""/models: list, describe, upload, choose the default and the segmentation model, remove.

Changes need the training token, checked before any body is read (see :mod:`ocr_service.api.bodies`).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ocr_service.api.auth import TrainingTokenDep
from ocr_service.api.bodies import FormShape, read_json, receive_form
from ocr_service.errors import AppError, ErrorCode
from ocr_service.models_admin import InstallRequest, ModelAdmin

router = APIRouter()

MODEL_FORM = FormShape(
    file_field="file",
    text_fields=frozenset({"name", "replace", "default"}),
    required=frozenset({"name"}),
    usage="Send a multipart form with the model as 'file' and its name as 'name'.",
)


def get_model_admin(request: Request) -> ModelAdmin:
    admin: ModelAdmin = request.app.state.model_admin
    return admin


ModelAdminDep = Annotated[ModelAdmin, Depends(get_model_admin)]


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
        fields = await receive_form(request, MODEL_FORM, staged)
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
async def set_default_model(request: Request, admin: ModelAdminDep, _: TrainingTokenDep) -> dict[str, Any]:
    body = await read_json(request, ModelChoice)
    result: dict[str, Any] = await asyncio.to_thread(admin.set_default, body.name)
    return result


@router.put("/models/segmentation")
async def set_segmentation_model(request: Request, admin: ModelAdminDep, _: TrainingTokenDep) -> dict[str, Any]:
    """The segmentation model /ocr finds lines with; null goes back to OCR_SEGMENTATION_MODEL."""
    body = await read_json(request, ModelChoice)
    result: dict[str, Any] = await asyncio.to_thread(admin.set_segmentation, body.name)
    return result


@router.delete("/models/{name}", status_code=204)
def remove_model(name: str, admin: ModelAdminDep, _: TrainingTokenDep) -> Response:
    # Documents being read with the model finish with their pinned copy of its file.
    admin.remove(name)
    return Response(status_code=204)
