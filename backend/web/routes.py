"""Pages outside /api. For now only the one-time setup page; the web UI comes with its own issue."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()

_SETUP = (Path(__file__).parent / "setup.html").read_text(encoding="utf-8")


def _csp_hash(tag: str) -> str:
    body = re.search(rf"<{tag}>(.*?)</{tag}>", _SETUP, re.DOTALL)
    assert body is not None
    return "'sha256-" + base64.b64encode(hashlib.sha256(body.group(1).encode()).digest()).decode() + "'"


# Only this page's own script and style may run; it may talk to its own origin and nothing else.
_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src {_csp_hash('script')}; style-src {_csp_hash('style')}; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@router.get("/setup", include_in_schema=False)
def setup_page() -> HTMLResponse:
    """The page the start-up link opens; the token is in the link's fragment, never sent here."""
    return HTMLResponse(_SETUP, headers=_HEADERS)
