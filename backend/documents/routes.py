"""Documents, the trash and lines. Thin: parse, call the service, return a schema."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from backend.deps import AdminUser, CurrentUser, Services, ServicesDep, SessionDep
from backend.documents.model_labels import describe
from backend.documents.models import Page
from backend.documents.pages import PageKind, page_out
from backend.documents.render import MEDIA_TYPE
from backend.documents.review import mark_reviewed, unmark_reviewed
from backend.documents.schemas import (
    CorrectionOut,
    DiscardedCorrectionPage,
    DocumentFilter,
    DocumentOut,
    DocumentPage,
    LineCorrectionIn,
    LineOut,
    PageOut,
    TrashedDocumentOut,
    UploadFields,
)
from backend.documents.service import document_out
from backend.documents.upload import read_upload_form, upload_parts
from backend.schemas import Keyset
from backend.users.models import User

router = APIRouter(prefix="/api")

DocumentId = Annotated[int, Path(ge=1, le=2**31 - 1)]
LineId = Annotated[int, Path(ge=1, le=2**31 - 1)]
PageNumber = Annotated[int, Path(ge=1, le=2**31 - 1)]
IfNoneMatch = Annotated[str | None, Header(max_length=8192)]
_CHUNK = 64 * 1024


@router.post("/documents", status_code=201)
async def upload_document(
    request: Request, user: CurrentUser, services: ServicesDep, session: SessionDep
) -> DocumentOut:
    """Multipart ``file`` (PDF, PNG, JPEG, TIFF, WebP), ``title``, optional ``writer`` and ``date``."""
    form = await read_upload_form(request, services.settings.max_upload_bytes)
    try:
        file, fields = upload_parts(form, UploadFields)
        document = await run_in_threadpool(
            services.documents.ingest, session, user, fields, file.filename, file.file, services.clock()
        )
    finally:
        await form.close()
    return document_out(document)


@router.get("/documents")
def list_documents(
    query: Annotated[DocumentFilter, Query()], _: CurrentUser, services: ServicesDep, session: SessionDep
) -> DocumentPage:
    return services.documents.search(session, query)


@router.get("/documents/{document_id}")
def read_document(document_id: DocumentId, _: CurrentUser, services: ServicesDep, session: SessionDep) -> DocumentOut:
    return document_out(services.documents.get(session, document_id))


@router.delete("/documents/{document_id}", status_code=204)
def delete_document(document_id: DocumentId, user: CurrentUser, services: ServicesDep, session: SessionDep) -> Response:
    """Move to the trash; an admin can restore it for APP_TRASH_DAYS."""
    services.documents.move_to_trash(session, document_id, user, services.clock())
    return Response(status_code=204)


@router.get("/trash")
def list_trash(_: AdminUser, services: ServicesDep, session: SessionDep) -> list[TrashedDocumentOut]:
    return services.documents.trashed(session)


@router.post("/trash/{document_id}/restore")
def restore_document(document_id: DocumentId, _: AdminUser, services: ServicesDep, session: SessionDep) -> DocumentOut:
    return document_out(services.documents.restore(session, document_id, services.clock()))


@router.delete("/trash/{document_id}", status_code=204)
def delete_for_good(document_id: DocumentId, _: AdminUser, services: ServicesDep, session: SessionDep) -> Response:
    """Delete a document in the trash for good, now: its pages, lines, corrections and original.
    409 NOT_IN_TRASH for a document not in the trash (move it there first)."""
    services.documents.delete_for_good(session, document_id)
    return Response(status_code=204)


@router.get("/documents/{document_id}/lines", response_model=list[LineOut])
def document_lines(document_id: DocumentId, _: CurrentUser, services: ServicesDep, session: SessionDep) -> Response:
    # Dumped here, in this thread: returned as models, the hundred lines would be validated again
    # in another trip through the thread pool before being dumped (bench/bench_api.py's p99).
    body = services.lines.for_document_json(session, services.documents.get(session, document_id))
    return Response(body, media_type="application/json")


@router.get("/documents/{document_id}/discarded-corrections")
def discarded_corrections(
    document_id: DocumentId,
    page: Annotated[Keyset, Query()],
    _: CurrentUser,
    services: ServicesDep,
    session: SessionDep,
) -> DiscardedCorrectionPage:
    """Corrections an OCR re-run with ``discardCorrections`` dropped: each person's text and its
    history, newest first, ``limit`` at a time (``cursor``: the previous page's ``nextCursor``)."""
    return services.lines.discarded(session, services.documents.get(session, document_id), page)


@router.patch("/lines/{line_id}")
def correct_line(
    line_id: LineId, body: LineCorrectionIn, user: CurrentUser, services: ServicesDep, session: SessionDep
) -> LineOut:
    """Save a person's text; ``version`` must be the line's current one, else 409 LINE_CHANGED."""
    return services.lines.correct(session, line_id, body.text, body.version, user, services.clock())


@router.get("/lines/{line_id}/history")
def line_history(line_id: LineId, _: CurrentUser, services: ServicesDep, session: SessionDep) -> list[CorrectionOut]:
    return services.lines.history(session, line_id)


@router.get("/documents/{document_id}/pages")
def document_pages(
    document_id: DocumentId, user: CurrentUser, services: ServicesDep, session: SessionDep
) -> list[PageOut]:
    """Every page: its size in the OCR's pixels (the space of its lines' coordinates) and its image URLs."""
    return services.pages.pages(session, services.documents.get_for(session, document_id, user))


def _reviewed_out(session: Session, page: Page) -> PageOut:
    return page_out(page, describe(session, page.ocr_model, page.ocr_model_version))


@router.put("/documents/{document_id}/pages/{number}/review")
def review_page(
    document_id: DocumentId, number: PageNumber, user: CurrentUser, services: ServicesDep, session: SessionDep
) -> PageOut:
    """Mark the page reviewed: a person checked every line (positions and text), so its lines are
    training data as they stand. 422 PAGE_HAS_NO_LINES before OCR has read it; already reviewed:
    unchanged."""
    document = services.documents.get(session, document_id)
    return _reviewed_out(session, mark_reviewed(session, document, number, user, services.clock()))


@router.delete("/documents/{document_id}/pages/{number}/review")
def unreview_page(
    document_id: DocumentId, number: PageNumber, _: CurrentUser, services: ServicesDep, session: SessionDep
) -> PageOut:
    """Take a page's review back (not reviewed: unchanged)."""
    document = services.documents.get(session, document_id)
    return _reviewed_out(session, unmark_reviewed(session, document, number))


@router.get("/documents/{document_id}/pages/{number}/image", response_class=Response)
async def page_image(
    document_id: DocumentId,
    number: PageNumber,
    user: CurrentUser,
    services: ServicesDep,
    session: SessionDep,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """The page as WebP, long side at most APP_PAGE_MAX_SIDE; rendered on first request, then cached."""
    return await _page_image(document_id, number, PageKind.IMAGE, user, services, session, if_none_match)


@router.get("/documents/{document_id}/pages/{number}/thumbnail", response_class=Response)
async def page_thumbnail(
    document_id: DocumentId,
    number: PageNumber,
    user: CurrentUser,
    services: ServicesDep,
    session: SessionDep,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """The page as a WebP thumbnail, long side at most APP_PAGE_THUMBNAIL_SIDE."""
    return await _page_image(document_id, number, PageKind.THUMBNAIL, user, services, session, if_none_match)


async def _page_image(
    document_id: int,
    number: int,
    kind: PageKind,
    user: User,
    services: Services,
    session: Session,
    if_none_match: str | None,
) -> Response:
    document = await run_in_threadpool(services.documents.get_for, session, document_id, user)
    image = await services.pages.fetch(session, document, number, kind, _client_has(if_none_match))
    headers = {
        "ETag": image.etag,
        "Cache-Control": f"private, max-age={services.settings.page_cache_max_age_s}",
        "X-Content-Type-Options": "nosniff",
    }
    if image.body is None:
        return Response(status_code=304, headers=headers)
    return StreamingResponse(_chunks(image.body), media_type=MEDIA_TYPE, headers=headers)


def _client_has(if_none_match: str | None) -> Callable[[str], bool]:
    """If-None-Match compares weakly (RFC 9110 13.1.2): ``W/"x"`` matches ``"x"``; ``*`` matches any."""
    given = {tag.strip().removeprefix("W/") for tag in (if_none_match or "").split(",") if tag.strip()}
    return lambda etag: "*" in given or etag in given


def _chunks(body: BinaryIO) -> Iterator[bytes]:
    with body:
        while chunk := body.read(_CHUNK):
            yield chunk
