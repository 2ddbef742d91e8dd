"""The import page: a Transkribus or eScriptorium export (a ZIP of page images with PAGE XML or
ALTO) sent to POST /api/imports by the page's script, with the upload's progress, and then what
was imported (documents, pages, lines, each a link) or the refusal in the catalog's words."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from backend.deps import ServicesDep
from backend.web.deps import UserPage
from backend.web.i18n import N_

router = APIRouter(include_in_schema=False)


@router.get("/import")
def import_page(page: UserPage, services: ServicesDep) -> Response:
    max_megabytes = services.settings.import_max_bytes // (1024 * 1024)
    return page.render("import.html", title=page.gettext(N_("Import")), max_megabytes=max_megabytes)
