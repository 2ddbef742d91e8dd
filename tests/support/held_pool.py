"""A stand-in for ``WorkerPool`` whose pages finish only when the test lets them (pages whose
reader left too: like a worker, the pool holds such a page until it is done with it).

It keeps kraken out of the read-path tests that are about admission, memory and clients
that leave: those need a page that stays in the pool for exactly as long as the test says,
not a real page that takes however long it takes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from ocr_service.engine.pipeline import ModelRef, PageResult

# How often a held page looks whether the test let it go. Only the latency of the fake.
_POLL_S = 0.005


@dataclass
class HeldPool:
    workers: int = 2
    threads_per_worker: int = 1
    ready: bool = False
    info: list[object] = field(default_factory=list)
    # While cleared, pages stay in the pool; set it to let every page (now and later) finish.
    release: threading.Event = field(default_factory=threading.Event)
    # Pages that may still finish while ``release`` is cleared (see ``let_finish``).
    allowance: int = 0
    entered: list[tuple[int, int]] = field(default_factory=list)
    finished: int = 0
    cancelled: int = 0
    # Abandoned pages the test has let finish (and so let go).
    abandoned_done: int = 0
    in_pool: int = 0
    most_in_pool: int = 0
    # Pixels of the decoded pages in the pool now, and at the most.
    pixels_in_pool: int = 0
    most_pixels_in_pool: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _dropping: set[asyncio.Task[None]] = field(default_factory=set)

    def let_finish(self, pages: int) -> None:
        with self._lock:
            self.allowance += pages

    def _may_finish(self) -> bool:
        with self._lock:
            if self.release.is_set():
                return True
            if self.allowance > 0:
                self.allowance -= 1
                return True
            return False

    def start(self) -> list[object]:
        self.ready = True
        return self.info

    def shutdown(self) -> None:
        self.ready = False

    async def process_page(
        self,
        image: Image.Image,
        model: ModelRef | None,
        segmentation_model: ModelRef | None = None,
        *,
        let_go: Callable[[], None] | None = None,
    ) -> PageResult:
        """Like a worker: a page whose reader is cancelled is still held (and its memory not
        let go) until the test lets it finish; then it is dropped (``abandoned_done``)."""
        with self._lock:
            self.entered.append(image.size)
            self.in_pool += 1
            self.most_in_pool = max(self.most_in_pool, self.in_pool)
            self.pixels_in_pool += image.width * image.height
            self.most_pixels_in_pool = max(self.most_pixels_in_pool, self.pixels_in_pool)
        try:
            await self._held()
        except asyncio.CancelledError:
            with self._lock:
                self.cancelled += 1
            dropping = asyncio.get_running_loop().create_task(self._finish_abandoned(image, let_go))
            self._dropping.add(dropping)
            dropping.add_done_callback(self._dropping.discard)
            raise
        self._leave(image, let_go)
        with self._lock:
            self.finished += 1
        return PageResult(width=image.width, height=image.height, lines=[])

    async def _held(self) -> None:
        while not self._may_finish():
            await asyncio.sleep(_POLL_S)

    async def _finish_abandoned(self, image: Image.Image, let_go: Callable[[], None] | None) -> None:
        await self._held()
        with self._lock:
            self.abandoned_done += 1
        self._leave(image, let_go)

    def _leave(self, image: Image.Image, let_go: Callable[[], None] | None) -> None:
        with self._lock:
            self.in_pool -= 1
            self.pixels_in_pool -= image.width * image.height
        if let_go is not None:
            let_go()
