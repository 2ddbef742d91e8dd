"""Search over every line of the archive. Thin: parse, call the service, return a schema."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from backend.deps import CurrentUser, ServicesDep, SessionDep
from backend.search.schemas import SearchOut, SearchParams
from backend.search.service import SearchLimits, search

router = APIRouter(prefix="/api")


@router.get("/search", response_model=SearchOut)
def search_lines(
    params: Annotated[SearchParams, Query()], _: CurrentUser, services: ServicesDep, session: SessionDep
) -> Response:
    """Documents whose lines match ``q``, best first, each with its best lines and where to highlight them."""
    # Dumped here, in this thread: returned as a model, the page of results would be validated
    # again in another trip through the thread pool before being dumped (as document_lines).
    body = search(session, params, SearchLimits.from_settings(services.settings)).model_dump_json(by_alias=True)
    return Response(body, media_type="application/json")
