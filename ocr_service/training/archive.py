"""Unpacking an uploaded training ZIP without trusting anything in it.

The generic checks (names, links and devices, collisions, entry count, sizes counted again
while read, a damaged archive) are the shared :mod:`untrusted.archive`; this module adds what
training data needs: which files a training ZIP may carry, how large its text files may be,
every target resolving inside the job's folder, and all-or-nothing unpacking. Every failure is
an :class:`AppError` (4xx): :func:`_as_app_error` maps the shared exceptions to this service's
codes.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from ocr_service.errors import AppError, ErrorCode
from untrusted.archive import (
    MAX_DEPTH,
    ArchiveLimits,
    Layout,
    UnpackBudget,
    checked_entries,
    entry_chunks,
    is_ignorable,
    open_archive,
)
from untrusted.errors import (
    ArchiveTooLargeError,
    DamagedArchiveError,
    InvalidArchiveError,
    UnsafeArchiveError,
    UntrustedInputError,
)

__all__ = ["MAX_DEPTH", "ArchiveLimits", "check_entries", "extract_training_zip"]

# Files a training ZIP may carry: page and line images, PAGE XML / ALTO, line transcriptions.
ALLOWED_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".xml", ".txt"})
# Never accepted, whatever their name claims: Python pickles (kraken's .ckpt is one) and models.
FORBIDDEN_SUFFIXES = frozenset({".ckpt", ".pkl", ".pickle", ".pt", ".pth", ".bin", ".npy", ".npz", ".mlmodel"})
# Text files are read whole by the service itself (lxml parses the XML, the .gt.txt lines are
# checked): bounded per file, far above a real page's (PAGE XML of a dense page: under 1 MB).
MAX_TEXT_FILE_BYTES = {".xml": 64 * 1024 * 1024, ".txt": 1024 * 1024}
PATH_MAX = 4096

_CODES: dict[type[UntrustedInputError], ErrorCode] = {
    DamagedArchiveError: ErrorCode.INVALID_ARCHIVE,
    InvalidArchiveError: ErrorCode.INVALID_ARCHIVE,
    UnsafeArchiveError: ErrorCode.UNSAFE_ARCHIVE,
    ArchiveTooLargeError: ErrorCode.ARCHIVE_TOO_LARGE,
}


@contextmanager
def _as_app_error() -> Iterator[None]:
    try:
        yield
    except (DamagedArchiveError, InvalidArchiveError, UnsafeArchiveError, ArchiveTooLargeError) as exc:
        raise AppError(_CODES[type(exc)], exc.message) from exc


def check_entries(
    archive: zipfile.ZipFile, destination: Path, limits: ArchiveLimits
) -> list[tuple[zipfile.ZipInfo, Path]]:
    """Every file entry with its target path; raises before anything is written if one is unsafe."""
    root = destination.resolve()
    budget = UnpackBudget(limits.max_unpacked_bytes)
    plan: list[tuple[zipfile.ZipInfo, Path]] = []
    layout = Layout()
    with _as_app_error():
        for info, path in checked_entries(archive, limits):
            name = info.filename
            target = (root / Path(*path.parts)).resolve() if path.parts else root
            if not target.is_relative_to(root):
                raise AppError(
                    ErrorCode.UNSAFE_ARCHIVE, f"The ZIP entry {name!r} would be written outside the job's folder."
                )
            if len(os.fsencode(str(target))) >= PATH_MAX:
                raise AppError(ErrorCode.INVALID_ARCHIVE, f"The ZIP entry {name[:80]!r}… has too long a path.")
            if info.is_dir() or not path.parts or is_ignorable(path.parts):
                continue
            suffix = path.suffix.lower()
            if suffix in FORBIDDEN_SUFFIXES:
                raise AppError(
                    ErrorCode.UNSAFE_ARCHIVE,
                    f"The ZIP entry {name!r} is a checkpoint, pickle or model file; training ZIPs may hold only "
                    "images, PAGE XML/ALTO and .gt.txt files (name a stored model with baseModel instead).",
                )
            if suffix not in ALLOWED_SUFFIXES:
                # Unknown files are skipped rather than refused: exports often carry a README or a manifest.
                continue
            layout.add_file(path, name)
            _check_text_size(name, suffix, info.file_size)
            budget.declare(info.file_size)
            plan.append((info, target))
    if not plan:
        raise AppError(ErrorCode.INVALID_TRAINING_DATA, "The ZIP holds no images, PAGE XML/ALTO or .gt.txt files.")
    return plan


def _check_text_size(name: str, suffix: str, size: int) -> None:
    cap = MAX_TEXT_FILE_BYTES.get(suffix)
    if cap is not None and size > cap:
        raise AppError(
            ErrorCode.ARCHIVE_TOO_LARGE,
            f"The ZIP entry {name[:80]!r} is larger than {cap / 1024**2:g} MB; "
            f"a {suffix} file of training data is far smaller.",
        )


def _write(archive: zipfile.ZipFile, plan: list[tuple[zipfile.ZipInfo, Path]], limits: ArchiveLimits) -> list[Path]:
    written: list[Path] = []
    budget = UnpackBudget(limits.max_unpacked_bytes)
    for info, target in plan:
        target.parent.mkdir(parents=True, exist_ok=True)
        suffix, size = target.suffix.lower(), 0
        with open(target, "xb") as dst:
            for chunk in entry_chunks(archive, info):
                size += len(chunk)
                _check_text_size(info.filename, suffix, size)
                budget.count(len(chunk))
                dst.write(chunk)
        written.append(target)
    return written


def extract_training_zip(source: BinaryIO, destination: Path, limits: ArchiveLimits) -> list[Path]:
    """Unpack ``source`` into ``destination`` (created here); all or nothing.

    Bad input raises :class:`AppError` (4xx) and leaves no ``destination`` behind. An
    ``OSError`` that still escapes comes from this machine (a full disk), not the archive:
    every name the archive could make the file system refuse is checked beforehand.
    """
    with _as_app_error():
        archive = open_archive(source, limits)
    with archive:
        plan = check_entries(archive, destination, limits)
        destination.mkdir(parents=True, exist_ok=False)
        try:
            with _as_app_error():
                return _write(archive, plan, limits)
        except BaseException:
            shutil.rmtree(destination, ignore_errors=True)
            raise
