"""The service's own folders under TMPDIR, and the sweep at start-up of those a killed service left.

What the service writes under TMPDIR is either unnamed — spooled uploads, downloads and the
training upload are ``O_TMPFILE`` files (``tempfile.TemporaryFile``), gone with their last
descriptor even when the process is killed — or lies in a scratch folder named
``ocr-service-<purpose>-*`` (the workers' page reports). Its process holds an exclusive ``flock``
on each of its scratch folders for as long as it lives; the kernel drops the lock when the
process ends, however it ends. So the sweep removes exactly the folders whose process has died,
even where TMPDIR is shared (``/tmp``) with other programs or other instances of the service,
and never touches a file it did not make.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "ocr-service-"


class ScratchFolder:
    """A folder of this process's own under TMPDIR, locked until :meth:`remove`."""

    def __init__(self, path: Path, lock_fd: int) -> None:
        self.path = path
        self._lock_fd = lock_fd

    @classmethod
    def create(cls, purpose: str, parent: Path | None = None) -> ScratchFolder:
        parent = parent if parent is not None else Path(tempfile.gettempdir())
        while True:
            path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{purpose}-", dir=parent))
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            # Waits only while a sweep that found the new folder unlocked removes it.
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _still_there(path, fd):
                return cls(path, fd)
            os.close(fd)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._lock_fd)


@dataclass(frozen=True)
class Swept:
    folders: int
    bytes: int


def sweep(parent: Path | None = None) -> Swept:
    """Remove the scratch folders in ``parent`` (TMPDIR) whose process has died; log what was freed."""
    parent = parent if parent is not None else Path(tempfile.gettempdir())
    folders = freed = 0
    with os.scandir(parent) as entries:
        for entry in entries:
            if not entry.name.startswith(PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            size = _remove_if_abandoned(Path(entry.path))
            if size is not None:
                folders, freed = folders + 1, freed + size
    if folders:
        log.info("removed %d folder(s) a stopped OCR service left in %s, %d bytes", folders, parent, freed)
    return Swept(folders, freed)


def _remove_if_abandoned(path: Path) -> int | None:
    """The bytes freed, or None where the folder is in use, not ours, or already gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None  # gone meanwhile, or a link planted in a shared folder
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # its process is alive
        if os.fstat(fd).st_uid != os.getuid() or not _still_there(path, fd):
            return None
        size = _size(path)
        try:
            shutil.rmtree(path)
        except OSError as exc:
            log.warning("a folder a stopped OCR service left cannot be removed: %s: %s", path, exc)
            return None
        return size
    finally:
        os.close(fd)


def _still_there(path: Path, fd: int) -> bool:
    """Whether ``path`` is still the folder ``fd`` has open (a sweep may have removed it)."""
    try:
        named = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(folder, name)).st_size
    return total
