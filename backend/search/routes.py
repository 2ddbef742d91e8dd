"""Search over every line of the archive. Thin: parse, call the service, return a schema."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from backend.deps import BriefUser, ServicesDep
from backend.search.schemas import SearchOut, SearchParams

router = APIRouter(prefix="/api")


@router.get("/search", response_model=SearchOut)
async def search_lines(params: Annotated[SearchParams, Query()], _: BriefUser, services: ServicesDep) -> Response:
    """Documents whose lines match ``q``, best first, each with its best lines and where to highlight them."""
    # Run where the runner says (backend/search/runner.py), dumped there: returned as a model,
    # the page of results would be validated again before being dumped.
    body = await services.searches.json(params)
    return Response(body, media_type="application/json")
