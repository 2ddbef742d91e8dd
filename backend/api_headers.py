"""The headers every ``/api`` answer carries where its route set none of its own.

The API's answers are one person's view of the archive (their documents, the lines' texts, the
users): like the pages (backend/web/rendering.py), never to be kept by a browser's or a proxy's
cache, where the next person on a shared tablet or behind the same proxy could be given them.
A route that may be cached says so itself (the page images: ``private``, with their ETag).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULTS = (("cache-control", "no-store"), ("x-content-type-options", "nosniff"))


class ApiHeaders:
    """Plain ASGI (see backend/metrics.py's RequestLatency for why not BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return

        async def send_with_defaults(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in DEFAULTS:
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_defaults)
