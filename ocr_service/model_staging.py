"""Receiving a candidate model: a file of our own naming in the store's staging folder."""

from __future__ import annotations

import contextlib
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ocr_service.errors import AppError, ErrorCode

_COPY_CHUNK = 1024 * 1024


class StagedFile:
    """A candidate model arriving in the store's staging folder, cut off at ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.size = 0
        self._handle: IO[bytes] | None = open(path, "xb")  # closed in close()

    def write(self, data: bytes) -> None:
        if self._handle is None:
            raise ValueError("the staged file is closed")
        self.size += len(data)
        if self.size > self.max_bytes:
            raise AppError(
                ErrorCode.MODEL_TOO_LARGE,
                f"The model file is larger than the limit of {self.max_bytes / 1024 / 1024:g} MB.",
                details={"maxBytes": self.max_bytes},
            )
        self._handle.write(data)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class ModelStaging:
    """Staging files in ``folder``, each cut off at ``max_bytes`` and removed whatever happens."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes

    @contextlib.contextmanager
    def staged(self) -> Iterator[StagedFile]:
        staged = StagedFile(self.folder / f"{uuid.uuid4().hex}.part", self.max_bytes)
        try:
            yield staged
        finally:
            staged.close()
            staged.path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def copy_of(self, path: Path) -> Iterator[StagedFile]:
        """``path`` copied into a staging file (refused while copying if it is too large)."""
        with self.staged() as staged, open(path, "rb") as handle:
            while chunk := handle.read(_COPY_CHUNK):
                staged.write(chunk)
            yield staged


def sweep_staging(folder: Path, older_than_s: float) -> None:
    """Remove what uploads whose process died left in ``folder``."""
    cutoff = time.time() - older_than_s
    for leftover in folder.iterdir():
        with contextlib.suppress(OSError):
            if leftover.lstat().st_mtime < cutoff:
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink()
