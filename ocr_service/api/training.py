"""POST /train, POST /segtrain, GET /train/jobs[/{jobId}], DELETE /train/jobs/{jobId} (cancel).

Thin: read the form, hand it to :class:`ocr_service.training.service.TrainingService`.
Every route needs ``X-Training-Token``; an upload is refused (401/503/409) before its body is read.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ocr_service.api.auth import TrainingTokenDep
from ocr_service.api.bodies import DiskSpool, FormShape, receive_form
from ocr_service.api.deps import ServicesDep
from ocr_service.errors import AppError, ErrorCode
from ocr_service.training.datasets import TrainingKind
from ocr_service.training.service import TrainingRequest, TrainingService

router = APIRouter()

TRAINING_FORM = FormShape(
    file_field="file",
    text_fields=frozenset({"modelName", "baseModel", "epochs", "spec", "learningRate"}),
    required=frozenset({"modelName"}),
    usage="Send a multipart form with the training data as a ZIP in the field 'file' and 'modelName'.",
    max_field_bytes=4096,
)


def _service(services: ServicesDep) -> TrainingService:
    if services.training is None:
        raise AppError(ErrorCode.TRAINING_DISABLED, "Training is not available in this OCR service.")
    return services.training


def _text(fields: dict[str, str], name: str) -> str | None:
    value = fields.get(name, "").strip()
    return value or None


def _number(fields: dict[str, str], name: str, kind: type[int] | type[float]) -> Any:
    raw = _text(fields, name)
    if raw is None:
        return None
    try:
        return kind(raw)
    except ValueError as exc:
        raise AppError(ErrorCode.INVALID_REQUEST, f"The field '{name}' must be a number.") from exc


async def _submit(request: Request, service: TrainingService, kind: TrainingKind) -> JSONResponse:
    # After the token (a dependency) and before a byte of the body: a busy service refuses
    # a 1 GB upload at once. submit() checks again, under its lock, once the data is here.
    settings = service.settings
    with service.upload_slot(), DiskSpool(settings.training_dir, settings.training_max_upload_bytes) as spool:
        fields = await receive_form(request, TRAINING_FORM, spool)
        model_name = _text(fields, "modelName")
        if model_name is None:
            raise AppError(ErrorCode.INVALID_REQUEST, "The field 'modelName' is required.")
        training_request = TrainingRequest(
            kind=kind,
            model_name=model_name,
            base_model=_text(fields, "baseModel"),
            epochs=_number(fields, "epochs", int),
            spec=_text(fields, "spec"),
            learning_rate=_number(fields, "learningRate", float),
        )
        spool.file.seek(0)
        # Unpacking and checking the ZIP blocks: off the event loop, so /ocr and /health stay responsive.
        job = await asyncio.to_thread(service.submit, training_request, spool.file)
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
