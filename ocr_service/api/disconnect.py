"""Noticing a client that hangs up while its document is read, so its work can be cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.types import Receive

T = TypeVar("T")


class ClientGoneError(Exception):
    """The client closed the connection; there is nobody left to answer."""


async def _hang_up(receive: Receive) -> None:
    # Once the body has been read, the server's next message for this request is the
    # disconnect (uvicorn also sends one when the response is complete; by then nobody waits).
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result; if the client hangs up first, ``work`` is cancelled (its clean-up
    runs to the end before this returns) and :class:`ClientGoneError` is raised.

    Only after the request's body has been read: the watcher takes the request's messages.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_hang_up(request.receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
        watcher.cancel()
        # Wait for the work's own clean-up (pages cancelled, document closed) to finish.
        await asyncio.gather(task, watcher, return_exceptions=True)
    if task.cancelled():
        raise ClientGoneError
    return task.result()
