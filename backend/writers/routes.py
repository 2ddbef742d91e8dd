"""Writers: the list and one writer. Thin: parse, call the service, return a schema."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from backend.deps import CurrentUser, ServicesDep, SessionDep
from backend.writers.schemas import SLUG_PATTERN, WriterFilter, WriterPage, WriterSummaryOut

router = APIRouter(prefix="/api")

Slug = Annotated[str, Path(pattern=SLUG_PATTERN)]


@router.get("/writers")
def list_writers(
    query: Annotated[WriterFilter, Query()], _: CurrentUser, services: ServicesDep, session: SessionDep
) -> WriterPage:
    """Every writer with their document count and their own model (null: the default reads them)."""
    return services.writers.page(session, query)


@router.get("/writers/{slug}")
def read_writer(slug: Slug, _: CurrentUser, services: ServicesDep, session: SessionDep) -> WriterSummaryOut:
    return services.writers.get(session, slug)
