"""Search over every line of the archive. Thin: parse, call the service, return a schema."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from backend.deps import CurrentUser, ServicesDep, SessionDep
from backend.search.schemas import SearchOut, SearchParams
from backend.search.service import SearchLimits, search

router = APIRouter(prefix="/api")


@router.get("/search")
def search_lines(
    params: Annotated[SearchParams, Query()], _: CurrentUser, services: ServicesDep, session: SessionDep
) -> SearchOut:
    """Documents whose lines match ``q``, best first, each with its best lines and where to highlight them."""
    return search(session, params, SearchLimits.from_settings(services.settings))
