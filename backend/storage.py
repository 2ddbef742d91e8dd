"""Where originals (and later rendered pages) live: one small interface, a local folder by default.

Keys are made up here (``originals/<32 hex>``), never taken from a file name or any other
input, and every key is checked against that shape before it touches the file system or
the network. ``backend/storage_s3.py`` keeps the same objects in an S3-compatible bucket.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO, BinaryIO, Protocol

KEY = re.compile(r"(?:originals|pages)/[0-9a-f]{32}")
_CHUNK = 1024 * 1024


class Storage(Protocol):
    """Every method raises :class:`InvalidKeyError` for a key not of :data:`KEY`'s shape (before any I/O)
    and :class:`StorageUnavailableError` when the store cannot be reached."""

    def save(self, source: BinaryIO, kind: str = "originals") -> str:
        """Copy ``source`` (from its current position) under a new key; return the key."""

    def open(self, key: str) -> BinaryIO:
        """The object, seekable, read as it is needed; ``FileNotFoundError`` when there is none."""

    def delete(self, key: str) -> None:
        """Remove the object; nothing happens when there is none."""

    def exists(self, key: str) -> bool: ...

    def check(self) -> None:
        """At start-up: raise :class:`StorageUnavailableError`, naming the setting to fix, if unusable."""


class InvalidKeyError(ValueError):
    pass


class StorageUnavailableError(OSError):
    """The store cannot be reached or refuses us (the backend answers 503 ``STORAGE_UNAVAILABLE``).

    An ``OSError``, like a failing disk: code that reads a stored file handles both alike.
    """


def checked_key(key: str) -> str:
    if not KEY.fullmatch(key):
        raise InvalidKeyError(f"not a storage key: {key!r}")
    return key


def new_key(kind: str) -> str:
    return checked_key(f"{kind}/{uuid.uuid4().hex}")


class LocalStorage:
    """Objects as files under ``root``; written to a temporary name first, so a crash leaves no half file."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._staging = self.root / ".staging"

    def _path(self, key: str) -> Path:
        path = (self.root / checked_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidKeyError(f"not a storage key: {key!r}")
        return path

    def save(self, source: BinaryIO, kind: str = "originals") -> str:
        key = new_key(kind)
        target = self._path(key)
        self._staging.mkdir(parents=True, exist_ok=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = self._staging / target.name
        try:
            with staging.open("xb") as out:
                shutil.copyfileobj(source, out, _CHUNK)
                out.flush()
                os.fsync(out.fileno())
            staging.replace(target)
        finally:
            staging.unlink(missing_ok=True)
        return key

    def open(self, key: str) -> BinaryIO:
        return self._path(key).open("rb")

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def check(self) -> None:
        try:
            self._staging.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self._staging):
                pass
        except OSError as exc:
            raise StorageUnavailableError(f"APP_STORAGE_DIR: {self.root} is not a writable folder ({exc})") from exc


def local_file(storage: Storage, key: str) -> IO[bytes]:
    """The object as a file on this machine's disk; blocking, so async code calls it in a thread.

    A folder store's own file; from any other store (S3) a temporary copy, deleted when it is
    closed. Async code that then reads the file in its event loop (httpx's multipart upload to
    the OCR service) waits on a local disk only, never on the network.
    """
    source = storage.open(key)
    try:
        source.fileno()
    except OSError:  # no file descriptor: not on this machine
        pass
    else:
        return source
    with source:
        copy = tempfile.NamedTemporaryFile(prefix=f"{key.rsplit('/', 1)[-1]}-")  # the caller closes it
        try:
            shutil.copyfileobj(source, copy, _CHUNK)
            copy.seek(0)
        except BaseException:
            copy.close()
            raise
    return copy
