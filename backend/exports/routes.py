"""Exports of transcriptions. Thin: parse, call the exporter, stream what it writes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse

from backend.deps import CurrentUser, ServicesDep, SessionDep
from backend.exports.schemas import ExportFormat, SelectionQuery
from backend.exports.service import Download

router = APIRouter(prefix="/api")

DocumentId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _response(download: Download) -> StreamingResponse:
    headers = {
        "Content-Disposition": download.content_disposition,
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }
    return StreamingResponse(download.body, media_type=download.media_type, headers=headers)


@router.get("/documents/{document_id}/export", response_class=StreamingResponse)
def export_document(
    document_id: DocumentId,
    export_format: Annotated[ExportFormat, Query(alias="format")],
    _: CurrentUser,
    services: ServicesDep,
    session: SessionDep,
) -> StreamingResponse:
    """The document's transcription as a download: ``txt`` (plain text, pages separated by a form
    feed), ``page`` / ``alto`` (a ZIP of the page images and one XML per page)."""
    return _response(services.exports.document(session, document_id, export_format, services.clock()))


@router.get("/exports", response_class=StreamingResponse)
def export_selection(
    query: Annotated[SelectionQuery, Query()], _: CurrentUser, services: ServicesDep, session: SessionDep
) -> StreamingResponse:
    """Several documents as one ZIP (at most APP_EXPORT_MAX_DOCUMENTS): a folder per document
    for ``page`` / ``alto``, a file per document otherwise."""
    return _response(services.exports.selection(session, query.ids, query.format, services.clock()))
