"""Unpacking an uploaded training ZIP without trusting anything in it.

Every entry is checked before a single byte is written: no absolute paths, no ``..``, no
symlinks or other special files (read from ``external_attr``), no pickles or checkpoints,
each target resolving inside the destination, a bounded entry count and a bounded
uncompressed size. The header sizes can lie (a zip bomb declares small sizes), so the
bytes are counted again while they are written; an archive that turns out larger is
removed again as a whole.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ocr_service.errors import AppError, ErrorCode

# Files a training ZIP may carry: page and line images, PAGE XML / ALTO, line transcriptions.
ALLOWED_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".xml", ".txt"})
# Never accepted, whatever their name claims: Python pickles (kraken's .ckpt is one) and models.
FORBIDDEN_SUFFIXES = frozenset({".ckpt", ".pkl", ".pickle", ".pt", ".pth", ".bin", ".npy", ".npz", ".mlmodel"})
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int
    max_unpacked_bytes: int


def _unsafe(message: str) -> AppError:
    return AppError(ErrorCode.UNSAFE_ARCHIVE, message)


def _is_ignorable(parts: tuple[str, ...]) -> bool:
    # macOS and editors add these; they are not training data.
    return any(p == "__MACOSX" or p.startswith("._") or p == ".DS_Store" for p in parts)


def check_entries(
    archive: zipfile.ZipFile, destination: Path, limits: ArchiveLimits
) -> list[tuple[zipfile.ZipInfo, Path]]:
    """Every file entry with its target path; raises before anything is written if one is unsafe."""
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise AppError(
            ErrorCode.ARCHIVE_TOO_LARGE,
            f"The ZIP has {len(infos)} entries; at most {limits.max_entries} are accepted.",
        )
    root = destination.resolve()
    declared = 0
    plan: list[tuple[zipfile.ZipInfo, Path]] = []
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        if "\x00" in name or "\\" in name:
            raise _unsafe(f"The ZIP entry {name!r} has a name that is not a plain relative path.")
        path = PurePosixPath(name)
        if path.is_absolute() or name.startswith("/") or (path.parts and ":" in path.parts[0]):
            raise _unsafe(f"The ZIP entry {name!r} has an absolute path.")
        if ".." in path.parts:
            raise _unsafe(f"The ZIP entry {name!r} points outside the archive ('..').")
        mode = info.external_attr >> 16
        if mode and stat.S_ISLNK(mode):
            raise _unsafe(f"The ZIP entry {name!r} is a symbolic link; links are not accepted.")
        # Many writers leave the file-type bits at 0 (Python's writestr does); only a type
        # that is set and is not a file or folder (device, FIFO, socket) is refused.
        file_type = stat.S_IFMT(mode)
        if file_type and file_type not in (stat.S_IFREG, stat.S_IFDIR):
            raise _unsafe(f"The ZIP entry {name!r} is not a plain file or folder.")
        if info.flag_bits & 0x1:
            raise AppError(ErrorCode.INVALID_ARCHIVE, f"The ZIP entry {name!r} is encrypted.")
        target = (root / Path(*path.parts)).resolve() if path.parts else root
        if not target.is_relative_to(root):
            raise _unsafe(f"The ZIP entry {name!r} would be written outside the job's folder.")
        if info.is_dir() or _is_ignorable(path.parts):
            continue
        suffix = path.suffix.lower()
        if suffix in FORBIDDEN_SUFFIXES:
            raise _unsafe(
                f"The ZIP entry {name!r} is a checkpoint, pickle or model file; training ZIPs may hold only "
                "images, PAGE XML/ALTO and .gt.txt files (name a stored model with baseModel instead)."
            )
        if suffix not in ALLOWED_SUFFIXES:
            # Unknown files are skipped rather than refused: exports often carry a README or a manifest.
            continue
        key = str(target).casefold()
        if key in seen:
            raise AppError(ErrorCode.INVALID_ARCHIVE, f"The ZIP holds {name!r} twice.")
        seen.add(key)
        declared += info.file_size
        if declared > limits.max_unpacked_bytes:
            raise AppError(
                ErrorCode.ARCHIVE_TOO_LARGE,
                f"The ZIP unpacks to more than {limits.max_unpacked_bytes / 1024**2:g} MB.",
            )
        plan.append((info, target))
    if not plan:
        raise AppError(ErrorCode.INVALID_TRAINING_DATA, "The ZIP holds no images, PAGE XML/ALTO or .gt.txt files.")
    return plan


def extract_training_zip(source: BinaryIO, destination: Path, limits: ArchiveLimits) -> list[Path]:
    """Unpack ``source`` into ``destination`` (created here); all or nothing."""
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise AppError(ErrorCode.INVALID_ARCHIVE, "The uploaded file is not a readable ZIP archive.") from exc
    with archive:
        plan = check_entries(archive, destination, limits)
        destination.mkdir(parents=True, exist_ok=False)
        written: list[Path] = []
        total = 0
        try:
            for info, target in plan:
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(target, "xb") as dst:
                    while chunk := src.read(_CHUNK):
                        total += len(chunk)
                        if total > limits.max_unpacked_bytes:
                            raise AppError(
                                ErrorCode.ARCHIVE_TOO_LARGE,
                                f"The ZIP unpacks to more than {limits.max_unpacked_bytes / 1024**2:g} MB "
                                "(more than its headers declare).",
                            )
                        dst.write(chunk)
                written.append(target)
        except (zipfile.BadZipFile, EOFError, NotImplementedError, ValueError) as exc:
            shutil.rmtree(destination, ignore_errors=True)
            raise AppError(ErrorCode.INVALID_ARCHIVE, f"The ZIP archive is damaged: {exc}") from exc
        except (AppError, OSError):
            shutil.rmtree(destination, ignore_errors=True)
            raise
    return written
