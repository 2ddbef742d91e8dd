"""POST /train, POST /segtrain, GET /train/jobs[/{jobId}], DELETE /train/jobs/{jobId} (cancel).

Thin: read the form, hand it to :class:`ocr_service.training.service.TrainingService`.
Every route needs ``X-Training-Token``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from ocr_service.api.auth import TrainingTokenDep
from ocr_service.api.deps import ServicesDep
from ocr_service.errors import AppError, ErrorCode
from ocr_service.training.datasets import TrainingKind
from ocr_service.training.service import TrainingRequest, TrainingService

router = APIRouter()

_FIELDS = ("modelName", "baseModel", "epochs", "spec", "learningRate")


def _service(services: ServicesDep) -> TrainingService:
    if services.training is None:
        raise AppError(ErrorCode.TRAINING_DISABLED, "Training is not available in this OCR service.")
    return services.training


def _text(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise AppError(ErrorCode.INVALID_REQUEST, f"The field '{name}' must be text.")
    return value.strip()


def _number(form: Any, name: str, kind: type[int] | type[float]) -> Any:
    raw = _text(form, name)
    if raw is None:
        return None
    try:
        return kind(raw)
    except ValueError as exc:
        raise AppError(ErrorCode.INVALID_REQUEST, f"The field '{name}' must be a number.") from exc


async def _submit(request: Request, service: TrainingService, kind: TrainingKind) -> JSONResponse:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
        raise AppError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, "Send a multipart form with the training ZIP as 'file'.")
    form = await request.form(max_files=1, max_fields=len(_FIELDS) + 1, max_part_size=64 * 1024)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise AppError(ErrorCode.INVALID_REQUEST, "Send the training data as a ZIP in the multipart field 'file'.")
        model_name = _text(form, "modelName")
        if model_name is None:
            raise AppError(ErrorCode.INVALID_REQUEST, "The field 'modelName' is required.")
        training_request = TrainingRequest(
            kind=kind,
            model_name=model_name,
            base_model=_text(form, "baseModel"),
            epochs=_number(form, "epochs", int),
            spec=_text(form, "spec"),
            learning_rate=_number(form, "learningRate", float),
        )
        # Unpacking and checking the ZIP blocks: off the event loop, so /ocr and /health stay responsive.
        job = await asyncio.to_thread(service.submit, training_request, upload.file)
    finally:
        await form.close()
    return JSONResponse({"jobId": job.job_id, "status": job.status.value}, status_code=202)


@router.post("/train", status_code=202)
async def train(request: Request, services: ServicesDep, _: TrainingTokenDep) -> JSONResponse:
    return await _submit(request, _service(services), "recognition")


@router.post("/segtrain", status_code=202)
async def segtrain(request: Request, services: ServicesDep, _: TrainingTokenDep) -> JSONResponse:
    return await _submit(request, _service(services), "segmentation")


@router.get("/train/jobs")
async def list_jobs(services: ServicesDep, _: TrainingTokenDep) -> dict[str, Any]:
    jobs = await asyncio.to_thread(_service(services).all_jobs)
    return {"jobs": [job.public() for job in jobs]}


@router.get("/train/jobs/{job_id}")
async def get_job(job_id: str, services: ServicesDep, _: TrainingTokenDep) -> dict[str, Any]:
    return _service(services).get(job_id).public()


@router.delete("/train/jobs/{job_id}")
async def cancel_job(job_id: str, services: ServicesDep, _: TrainingTokenDep) -> dict[str, Any]:
    """Cancel a QUEUED or RUNNING job: its trainer is killed and nothing is installed."""
    job = await asyncio.to_thread(_service(services).cancel, job_id)
    return job.public()
