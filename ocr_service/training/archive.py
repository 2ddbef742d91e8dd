"""Unpacking an uploaded training ZIP without trusting anything in it.

Every entry is checked before a single byte is written: no absolute paths, no ``..``, no
symlinks or other special files (read from ``external_attr``), no pickles or checkpoints,
names the file system can hold (255 bytes a component, PATH_MAX a path), no two entries
that would land on the same file or a file where a folder must be (compared case- and
Unicode-normalisation-blind, as a user's Windows or macOS would see them), each target
resolving inside the destination, a bounded entry count and a bounded uncompressed size.
The header sizes can lie (a zip bomb declares small sizes), so the bytes are counted again
while they are written; an archive that turns out larger is removed again as a whole.

Every read of the client's bytes (the central directory, each entry's local header and
its decompression) happens in :func:`_open_archive` and :func:`_entry_chunks`: any failure
there is the archive's fault and becomes 422 INVALID_ARCHIVE, never a 500.
"""

from __future__ import annotations

import logging
import lzma
import os
import shutil
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ocr_service.errors import AppError, ErrorCode

log = logging.getLogger(__name__)

# Files a training ZIP may carry: page and line images, PAGE XML / ALTO, line transcriptions.
ALLOWED_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".xml", ".txt"})
# Never accepted, whatever their name claims: Python pickles (kraken's .ckpt is one) and models.
FORBIDDEN_SUFFIXES = frozenset({".ckpt", ".pkl", ".pickle", ".pt", ".pth", ".bin", ".npy", ".npz", ".mlmodel"})
# Text files are read whole by the service itself (lxml parses the XML, the .gt.txt lines are
# checked): bounded per file, far above a real page's (PAGE XML of a dense page: under 1 MB).
MAX_TEXT_FILE_BYTES = {".xml": 64 * 1024 * 1024, ".txt": 1024 * 1024}
# Linux's NAME_MAX and PATH_MAX (bytes): a longer name fails in open() with ENAMETOOLONG.
NAME_MAX = 255
# Path components of an entry (folders + file name).
MAX_DEPTH = 32
PATH_MAX = 4096
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int
    max_unpacked_bytes: int


def _unsafe(message: str) -> AppError:
    return AppError(ErrorCode.UNSAFE_ARCHIVE, message)


def _damaged(name: str | None, exc: BaseException) -> AppError:
    where = f"the entry {name!r} of the ZIP" if name is not None else "the ZIP"
    return AppError(
        ErrorCode.INVALID_ARCHIVE,
        f"The uploaded file is not a readable ZIP archive: {where} is damaged ({type(exc).__name__}).",
    )


# What zipfile and its decompressors raise on damaged bytes: a bad header (BadZipFile,
# struct.error, UnicodeDecodeError), a corrupt stream (zlib.error, lzma.LZMAError, and bz2's
# OSError), a cut-off stream (EOFError), an unknown method (NotImplementedError) or an entry
# encrypted behind the directory's back (RuntimeError).
_DAMAGE = (
    zipfile.BadZipFile,
    struct.error,
    zlib.error,
    lzma.LZMAError,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    RuntimeError,
)


def _is_damage(exc: Exception) -> bool:
    return isinstance(exc, _DAMAGE)


# The end records zipfile reads the central directory's size from (APPNOTE 4.3.14–4.3.16);
# the formats are zipfile's own.
_END = struct.Struct("<4s4H2LH")
_END64_LOCATOR = struct.Struct("<4slql")
_END64 = struct.Struct("<4sqhhllqqqq")
# zipfile holds an object of about 550 bytes for each 47-byte directory entry, before the
# entry count can be checked: the directory may take this much per allowed entry, in sum.
DIRECTORY_BYTES_PER_ENTRY = 1024


def _declared_directory_size(source: BinaryIO) -> int | None:
    """The central directory's size as zipfile will read it, or None where it finds no end record."""
    size = source.seek(0, os.SEEK_END)
    window = min(size, _END.size + 0xFFFF + _END64_LOCATOR.size + _END64.size)
    source.seek(size - window)
    tail = source.read(window)
    source.seek(0)
    at = len(tail) - _END.size if tail[-_END.size : -_END.size + 4] == b"PK\x05\x06" else tail.rfind(b"PK\x05\x06")
    if at < 0 or at + _END.size > len(tail):
        return None
    directory_size: int = _END.unpack_from(tail, at)[5]
    locator = at - _END64_LOCATOR.size
    record = locator - _END64.size
    if record >= 0 and tail[locator : locator + 4] == b"PK\x06\x07" and tail[record : record + 4] == b"PK\x06\x06":
        directory_size = _END64.unpack_from(tail, record)[8]
    return directory_size


def _open_archive(source: BinaryIO, limits: ArchiveLimits) -> zipfile.ZipFile:
    directory_size = _declared_directory_size(source)
    if directory_size is not None and directory_size > limits.max_entries * DIRECTORY_BYTES_PER_ENTRY:
        raise AppError(
            ErrorCode.ARCHIVE_TOO_LARGE,
            f"The ZIP's directory ({directory_size} bytes) is larger than {limits.max_entries} entries need.",
        )
    try:
        return zipfile.ZipFile(source)
    except Exception as exc:
        # Anything reading the client's central directory raises is the archive's fault; an
        # unexpected kind is logged with its traceback so a bug of ours stays visible.
        if not _is_damage(exc):
            log.warning("an unexpected error reading an uploaded ZIP's directory", exc_info=exc)
        raise _damaged(None, exc) from exc


def _entry_chunks(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """The decompressed bytes of ``info`` in chunks; a damaged entry raises INVALID_ARCHIVE."""
    try:
        with archive.open(info) as src:
            while chunk := src.read(_CHUNK):
                yield chunk
    except Exception as exc:
        if not _is_damage(exc):
            log.warning("an unexpected error decompressing ZIP entry %r", info.filename, exc_info=exc)
        raise _damaged(info.filename, exc) from exc


def _is_ignorable(parts: tuple[str, ...]) -> bool:
    # macOS and editors add these; they are not training data.
    return any(p == "__MACOSX" or p.startswith("._") or p == ".DS_Store" for p in parts)


def _key(path: PurePosixPath) -> str:
    # Two names a case-insensitive or normalising file system (the uploader's) shows as one.
    return unicodedata.normalize("NFC", str(path)).casefold()


def _check_name(name: str) -> PurePosixPath:
    if not name:
        raise AppError(ErrorCode.INVALID_ARCHIVE, "The ZIP has an entry without a name.")
    if "\x00" in name or "\\" in name:
        raise _unsafe(f"The ZIP entry {name!r} has a name that is not a plain relative path.")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/") or (path.parts and ":" in path.parts[0]):
        raise _unsafe(f"The ZIP entry {name!r} has an absolute path.")
    if ".." in path.parts:
        raise _unsafe(f"The ZIP entry {name!r} points outside the archive ('..').")
    # Training data is pages beside their XML, perhaps in a few folders; thousands of levels
    # would only cost time (the layout check is quadratic in depth) and recursion in mkdir/rmtree.
    if len(path.parts) > MAX_DEPTH:
        raise AppError(
            ErrorCode.INVALID_ARCHIVE,
            f"The ZIP entry {name[:80]!r}… lies {len(path.parts) - 1} folders deep; "
            f"at most {MAX_DEPTH - 1} are accepted.",
        )
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise AppError(
                ErrorCode.INVALID_ARCHIVE,
                f"The ZIP entry {name[:80]!r}… has a file or folder name longer than {NAME_MAX} bytes.",
            )
    return path


def _check_type(info: zipfile.ZipInfo) -> None:
    name = info.filename
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


class _Layout:
    """The files and folders the plan creates, so no two collide once on disk."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.folders: dict[str, str] = {}

    def add_file(self, path: PurePosixPath, name: str) -> None:
        key = _key(path)
        if key in self.files:
            raise AppError(ErrorCode.INVALID_ARCHIVE, f"The ZIP holds {name!r} twice (as {self.files[key]!r} as well).")
        if key in self.folders:
            raise AppError(ErrorCode.INVALID_ARCHIVE, f"The ZIP holds {name!r} both as a file and as a folder.")
        for parent in path.parents:
            if parent == PurePosixPath("."):
                continue
            folder = _key(parent)
            if folder in self.files:
                raise AppError(
                    ErrorCode.INVALID_ARCHIVE,
                    f"The ZIP holds {self.files[folder]!r} both as a file and as the folder of {name!r}.",
                )
            self.folders.setdefault(folder, str(parent))
        self.files[key] = name


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
    layout = _Layout()
    for info in infos:
        name = info.filename
        path = _check_name(name)
        _check_type(info)
        target = (root / Path(*path.parts)).resolve() if path.parts else root
        if not target.is_relative_to(root):
            raise _unsafe(f"The ZIP entry {name!r} would be written outside the job's folder.")
        if len(os.fsencode(str(target))) >= PATH_MAX:
            raise AppError(ErrorCode.INVALID_ARCHIVE, f"The ZIP entry {name[:80]!r}… has too long a path.")
        if info.is_dir() or not path.parts or _is_ignorable(path.parts):
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
        layout.add_file(path, name)
        _check_text_size(name, suffix, info.file_size)
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
    total = 0
    for info, target in plan:
        target.parent.mkdir(parents=True, exist_ok=True)
        suffix, size = target.suffix.lower(), 0
        with open(target, "xb") as dst:
            for chunk in _entry_chunks(archive, info):
                total += len(chunk)
                size += len(chunk)
                _check_text_size(info.filename, suffix, size)
                if total > limits.max_unpacked_bytes:
                    raise AppError(
                        ErrorCode.ARCHIVE_TOO_LARGE,
                        f"The ZIP unpacks to more than {limits.max_unpacked_bytes / 1024**2:g} MB "
                        "(more than its headers declare).",
                    )
                dst.write(chunk)
        written.append(target)
    return written


def extract_training_zip(source: BinaryIO, destination: Path, limits: ArchiveLimits) -> list[Path]:
    """Unpack ``source`` into ``destination`` (created here); all or nothing.

    Bad input raises :class:`AppError` (4xx) and leaves no ``destination`` behind. An
    ``OSError`` that still escapes comes from this machine (a full disk), not the archive:
    every name the archive could make the file system refuse is checked beforehand.
    """
    with _open_archive(source, limits) as archive:
        plan = check_entries(archive, destination, limits)
        destination.mkdir(parents=True, exist_ok=False)
        try:
            return _write(archive, plan, limits)
        except BaseException:
            shutil.rmtree(destination, ignore_errors=True)
            raise
