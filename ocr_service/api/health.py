from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ocr_service.api.deps import ServicesDep

router = APIRouter()


@router.get("/health")
def health(services: ServicesDep) -> JSONResponse:
    pool = services.pool
    if not pool.ready:
        body = {
            "status": "error" if services.startup_error else "starting",
            "message": services.startup_error or "The OCR workers are loading their models.",
        }
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    store = services.store
    return JSONResponse(
        {
            "status": "ok",
            "workers": pool.workers,
            "threadsPerWorker": pool.threads_per_worker,
            "segmentationModel": store.segmentation_name,
            "defaultModel": store.default_model,
            # Names only: describing a model dropped in by hand loads it, too slow for a probe.
            "models": store.names(),
            "queue": {
                "active": services.ocr.admission.active,
                "limit": services.ocr.admission.limit,
                # Bytes of decoded pages the service holds now, against OCR_PAGE_MEMORY_MB.
                "pageMemory": {"heldBytes": services.ocr.memory.held, "limitBytes": services.ocr.memory.limit},
            },
        }
    )
