"""The document view: one page of a document, its image with the lines drawn over it, and the
lines to correct. The page is rendered with the document and its pages; its scripts load the
lines from the API (``GET /api/documents/{id}/lines``) and save each correction there."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from backend.deps import ServicesDep, SessionDep
from backend.documents.service import document_out
from backend.web.deps import UserPage

router = APIRouter(include_in_schema=False)


@router.get("/documents/{document_id}")
def document_view(
    document_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    page: UserPage,
    services: ServicesDep,
    session: SessionDep,
    number: Annotated[int, Query(alias="page", ge=1, le=2**31 - 1)] = 1,
    line: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> Response:
    """``?page=N`` opens that page; ``&line=ID`` selects that line (search results link here)."""
    assert page.user is not None
    document = services.documents.get_for(session, document_id, page.user)
    pages = services.pages.pages(session, document)
    number = min(number, max(len(pages), 1))
    return page.render(
        "document.html",
        title=document.title,
        document=document_out(document),
        pages=pages,
        page_number=number,
        selected_line=line,
    )
