"""Pins: the files of the models a document reads with, held until the document ends.

A document resolves its models once, when it starts; each model file is then hard-linked
into ``.pins/<owner>/`` under a name that carries its version's stamp. Replacing the model
(``os.replace`` puts a new file under the name), removing it, or choosing another one leaves
the pinned link, and so the bytes the document started with, in place: the worker processes
(spawned, so they share no memory with us) load the pinned path, never the store's name.

Documents of the same version share one link (counted here); the link goes when the last
of them ends. A process that dies leaves its folder behind: each folder is owned through an
``flock`` on its ``.owner`` file, which the kernel drops when the owner dies, in any PID
namespace, and the next store that opens sweeps folders nobody owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from ocr_service.errors import AppError, ErrorCode
from ocr_service.model_ref import ModelRef, file_stamp, packaged_segmentation_model

log = logging.getLogger(__name__)

_OWNER = ".owner"
_NEW = ".new-"
# A folder being set up is renamed into place within moments; one left this old was cut off.
_STALE_NEW_S = 3600.0


class PinnedFileChangedError(Exception):
    """The file changed between resolving a model and pinning it (someone edited the store by hand)."""


@dataclass
class ModelPin:
    """The models of one document: the recognition model (None: lines are found, not read) and
    the segmentation model, each a pinned file. ``release()`` when the document ends."""

    model: ModelRef | None
    segmentation_model: ModelRef
    _pins: ModelPins | None = field(default=None, repr=False)

    def release(self) -> None:
        pins, self._pins = self._pins, None
        if pins is not None:
            for ref in (self.model, self.segmentation_model):
                if ref is not None:
                    pins.drop(ref)


class ModelPins:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._own: Path | None = None
        self._owner_handle: IO[bytes] | None = None
        self._counts: dict[str, int] = {}

    def sweep(self) -> None:
        """Remove the pin folders of processes that have ended."""
        if not self.folder.is_dir():
            return
        for entry in self.folder.iterdir():
            if entry == self._own or not entry.is_dir():
                continue
            if entry.name.startswith(_NEW):
                with contextlib.suppress(OSError):
                    if entry.lstat().st_mtime < time.time() - _STALE_NEW_S:
                        shutil.rmtree(entry, ignore_errors=True)
                continue
            try:
                fd = os.open(entry / _OWNER, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # its owner is alive
            shutil.rmtree(entry, ignore_errors=True)
            os.close(fd)

    def _folder(self) -> Path:
        if self._own is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            token = uuid.uuid4().hex
            building = self.folder / f"{_NEW}{token}"
            building.mkdir()
            handle = open(building / _OWNER, "wb")  # kept open (and locked) for the store's life
            fcntl.flock(handle, fcntl.LOCK_EX)
            own = self.folder / token
            os.replace(building, own)
            self._owner_handle, self._own = handle, own
        return self._own

    def pin(
        self,
        resolve: Callable[[], tuple[ModelRef | None, ModelRef]],
        locked: Callable[[], AbstractContextManager[None]],
    ) -> ModelPin:
        """Pin the (recognition, segmentation) models ``resolve()`` names, resolving under ``locked()``
        (the store's lock); a file changed by hand between resolving and linking is resolved once more."""
        changed: PinnedFileChangedError | None = None
        for _ in range(2):
            with locked():
                model, segmentation = resolve()
                pinned_model = None
                try:
                    if model is not None:
                        pinned_model = self.hold(model)
                    return ModelPin(pinned_model, self.hold(segmentation), self)
                except BaseException as exc:
                    # Whatever stopped the segmentation pin, the recognition pin taken before it goes.
                    if pinned_model is not None:
                        self.drop(pinned_model)
                    if not isinstance(exc, PinnedFileChangedError):
                        raise
                    changed = exc
        raise AppError(
            ErrorCode.SERVICE_BUSY,
            f"A model is being changed by hand right now ({changed}); please try again shortly.",
            headers={"Retry-After": "5"},
        )

    def hold(self, ref: ModelRef) -> ModelRef:
        """A reference to a pinned link of ``ref``'s file, counted until :meth:`drop`."""
        if Path(ref.path) == packaged_segmentation_model():
            return ref  # inside the installed kraken wheel: it never changes while we run
        with self._lock:
            folder = self._folder()
            pinned = folder / f"{ref.name}-{ref.stamp[0]}-{ref.stamp[1]}{Path(ref.path).suffix}"
            key = str(pinned)
            if key not in self._counts:
                try:
                    _link_or_copy(Path(ref.path), pinned)
                except FileNotFoundError as exc:
                    # removed by hand between resolving and linking: resolve once more
                    raise PinnedFileChangedError(
                        f"the file of model '{ref.name}' was removed while it was pinned"
                    ) from exc
                if file_stamp(pinned) != ref.stamp:
                    pinned.unlink(missing_ok=True)
                    raise PinnedFileChangedError(f"the file of model '{ref.name}' changed while it was pinned")
                self._counts[key] = 0
            self._counts[key] += 1
        return replace(ref, path=key)

    def drop(self, ref: ModelRef) -> None:
        with self._lock:
            count = self._counts.get(ref.path)
            if count is None:
                return  # not pinned (the packaged model)
            if count > 1:
                self._counts[ref.path] = count - 1
                return
            del self._counts[ref.path]
            Path(ref.path).unlink(missing_ok=True)

    def held(self) -> dict[str, int]:
        """Pinned files and how many documents hold each (for tests and diagnostics)."""
        with self._lock:
            return dict(self._counts)


async def pin_off_loop(pin: Callable[[str | None], ModelPin], recognition: str | None) -> ModelPin:
    """``pin(recognition)`` on a worker thread, so the event loop keeps serving while it waits
    for the store's file lock or copies a model across file systems.

    Shielded: cancelling the caller does not stop the thread (it could not), and the pin it
    takes after all is released as soon as it has been taken, so nothing stays pinned for a
    document that never started.
    """
    taking = asyncio.ensure_future(asyncio.to_thread(pin, recognition))
    try:
        return await asyncio.shield(taking)
    except asyncio.CancelledError:
        taking.add_done_callback(_release_unwanted)
        raise


def _release_unwanted(taking: asyncio.Future[ModelPin]) -> None:
    if taking.cancelled():
        return  # the loop is shutting down: the thread never ran, or the process ends with its pins
    if taking.exception() is None:  # a failed pin holds nothing (and its error has no reader)
        taking.result().release()


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except FileExistsError:
        # left by an earlier pin of ours that was cut off; the name carries the same stamp
        target.unlink()
        os.link(source, target)
    except OSError:
        # another file system (OCR_SEGMENTATION_MODEL outside the store): a copy, same stamp
        tmp = target.with_name(f".{target.name}.copy")
        shutil.copy2(source, tmp)
        os.replace(tmp, target)
