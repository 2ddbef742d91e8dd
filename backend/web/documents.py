"""The documents list (with its filters, upload, batch OCR and moving to the trash) and the
admins' trash. The pages render the list through the same services as ``GET /api/documents``
and ``GET /api/trash``; uploading, starting OCR, trashing, restoring and deleting for good go
through ``/api`` from the pages' scripts."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from pydantic import ValidationError
from starlette.responses import Response

from backend.deps import ServicesDep, SessionDep
from backend.documents.models import DocumentStatus
from backend.documents.schemas import DocumentFilter, DocumentPage
from backend.web.deps import AdminPage, UserPage
from backend.web.i18n import N_
from backend.writers.schemas import WriterFilter

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
# The writer filter offers the first writers by name (a family archive has a few dozen).
WRITERS_OFFERED = 200
# Each status in words, so a badge never says it by colour alone; and the badge's look.
STATUS_LABELS = {
    DocumentStatus.NEW: N_("New"),
    DocumentStatus.QUEUED: N_("Waiting for OCR"),
    DocumentStatus.RUNNING: N_("OCR running"),
    DocumentStatus.DONE: N_("Read"),
    DocumentStatus.FAILED: N_("OCR failed"),
    DocumentStatus.PARTIAL: N_("Partly read"),
}
STATUS_BADGES = {
    DocumentStatus.NEW: "neutral",
    DocumentStatus.QUEUED: "info",
    DocumentStatus.RUNNING: "info",
    DocumentStatus.DONE: "success",
    DocumentStatus.FAILED: "danger",
    DocumentStatus.PARTIAL: "warning",
}
# The fields of the filter form, as the list API names them.
FILTER_FIELDS = ("title", "writer", "status", "dateFrom", "dateTo")


def _filter(values: dict[str, str]) -> DocumentFilter | None:
    """The filter the form asks for; None when it cannot be read (a date typed by hand, say)."""
    given: dict[str, Any] = {key: value for key, value in values.items() if value.strip()}
    try:
        return DocumentFilter.model_validate({**given, "limit": PAGE_SIZE})
    except ValidationError:
        return None


@router.get("/documents")
def documents(
    page: UserPage,
    services: ServicesDep,
    session: SessionDep,
    title: Annotated[str, Query(max_length=500)] = "",
    writer: Annotated[str, Query(max_length=200)] = "",
    status: Annotated[str, Query(max_length=16)] = "",
    date_from: Annotated[str, Query(alias="dateFrom", max_length=10)] = "",
    date_to: Annotated[str, Query(alias="dateTo", max_length=10)] = "",
    cursor: Annotated[str, Query(max_length=10)] = "",
) -> Response:
    """The archive's documents, newest first, fifty at a time; the filters are a GET form, so a
    filtered list is a link a person can keep."""
    chosen = {"title": title, "writer": writer, "status": status, "dateFrom": date_from, "dateTo": date_to}
    query = _filter({**chosen, "cursor": cursor})
    listed = services.documents.search(session, query) if query else DocumentPage(items=[], next_cursor=None)
    writers = services.writers.page(session, WriterFilter(limit=WRITERS_OFFERED)).items
    kept = {key: value for key, value in chosen.items() if value.strip()}
    return page.render(
        "documents.html",
        title=page.gettext("Documents"),
        documents=listed.items,
        # Paging keeps the filter: the newest page, and the next one after this page's last.
        newest_url=(f"/documents?{urlencode(kept)}".rstrip("?")) if cursor else None,
        older_url=f"/documents?{urlencode({**kept, 'cursor': listed.next_cursor})}" if listed.next_cursor else None,
        chosen=chosen,
        filtered=bool(kept),
        filter_invalid=query is None,
        writers=writers,
        statuses=[(status.value, STATUS_LABELS[status]) for status in DocumentStatus],
        status_labels={status.value: page.gettext(label) for status, label in STATUS_LABELS.items()},
        status_badges={status.value: badge for status, badge in STATUS_BADGES.items()},
        max_upload_bytes=services.settings.max_upload_bytes,
        trash_days=services.settings.trash_days,
    )


@router.get("/admin/trash")
def trash(page: AdminPage, services: ServicesDep, session: SessionDep) -> Response:
    """What is in the trash, newest first: restore, or delete for good before its time."""
    return page.render(
        "documents_trash.html",
        title=page.gettext("Trash"),
        documents=services.documents.trashed(session),
        trash_days=services.settings.trash_days,
    )
