"""POST /api/imports: a ZIP of page images with PAGE XML or ALTO. Thin: parse, call the service."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from backend.deps import CurrentUser, ServicesDep, SessionDep
from backend.documents.service import document_out
from backend.documents.upload import read_upload_form, upload_parts
from backend.errors import ErrorCode
from backend.imports.schemas import ImportFields, ImportOut

router = APIRouter(prefix="/api")


@router.post("/imports", status_code=201)
async def import_documents(
    request: Request, user: CurrentUser, services: ServicesDep, session: SessionDep
) -> ImportOut:
    """Multipart ``file`` (the ZIP); optional ``title`` (a ZIP of one document), ``writer``, ``date``."""
    form = await read_upload_form(request, services.settings.import_max_bytes, ErrorCode.IMPORT_TOO_LARGE)
    try:
        file, fields = upload_parts(form, ImportFields)
        documents = await run_in_threadpool(
            services.imports.run, session, user, fields, file.filename, file.file, services.clock()
        )
    finally:
        await form.close()
    return ImportOut(documents=[document_out(d) for d in documents])
