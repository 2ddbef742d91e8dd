"""Where originals (and later rendered pages) live: one small interface, a local folder by default.

Keys are made up here (``originals/<32 hex>``), never taken from a file name or any other
input, and every key is checked against that shape before it touches the file system.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path
from typing import BinaryIO, Protocol

KEY = re.compile(r"(?:originals|pages)/[0-9a-f]{32}")
_CHUNK = 1024 * 1024


class Storage(Protocol):
    def save(self, source: BinaryIO, kind: str = "originals") -> str:
        """Copy ``source`` (from its current position) under a new key; return the key."""

    def open(self, key: str) -> BinaryIO: ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...


class InvalidKeyError(ValueError):
    pass


class LocalStorage:
    """Objects as files under ``root``; written to a temporary name first, so a crash leaves no half file."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._staging = self.root / ".staging"

    def _path(self, key: str) -> Path:
        if not KEY.fullmatch(key):
            raise InvalidKeyError(f"not a storage key: {key!r}")
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidKeyError(f"not a storage key: {key!r}")
        return path

    def save(self, source: BinaryIO, kind: str = "originals") -> str:
        key = f"{kind}/{uuid.uuid4().hex}"
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
