"""Reading a client's ZIP archive without trusting anything in it.

Every entry is checked before a byte of it is used: no absolute paths, no ``..``, no
backslashes, NULs or drive letters, no symlinks or other special files (read from
``external_attr``), names a file system can hold (255 bytes a component), no two entries that
would land on the same file or a file where a folder must be (compared case- and
Unicode-normalisation-blind, as a user's Windows or macOS would see them), a bounded entry count
and a bounded uncompressed size. The header sizes can lie (a zip bomb declares small sizes), so
the bytes are counted again while they are read.

Every read of the client's bytes (the central directory, each entry's local header and its
decompression) happens in :func:`open_archive` and :func:`entry_chunks`: any failure there is
the archive's fault and becomes :class:`DamagedArchiveError`, never an unexpected exception.
"""

from __future__ import annotations

import logging
import lzma
import os
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO

from untrusted.errors import ArchiveTooLargeError, DamagedArchiveError, InvalidArchiveError, UnsafeArchiveError

log = logging.getLogger(__name__)

# Linux's NAME_MAX (bytes): a longer name fails in open() with ENAMETOOLONG.
NAME_MAX = 255
# Path components of an entry (folders + file name).
MAX_DEPTH = 32
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int
    max_unpacked_bytes: int


def _damaged(name: str | None, exc: BaseException) -> DamagedArchiveError:
    where = f"the entry {name!r} of the ZIP" if name is not None else "the ZIP"
    return DamagedArchiveError(
        f"The uploaded file is not a readable ZIP archive: {where} is damaged ({type(exc).__name__})."
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


def open_archive(source: BinaryIO, limits: ArchiveLimits) -> zipfile.ZipFile:
    """The archive's directory, read once its declared size fits ``limits.max_entries``."""
    directory_size = _declared_directory_size(source)
    if directory_size is not None and directory_size > limits.max_entries * DIRECTORY_BYTES_PER_ENTRY:
        raise ArchiveTooLargeError(
            f"The ZIP's directory ({directory_size} bytes) is larger than {limits.max_entries} entries need."
        )
    try:
        return zipfile.ZipFile(source)
    except Exception as exc:
        # Anything reading the client's central directory raises is the archive's fault; an
        # unexpected kind is logged with its traceback so a bug of ours stays visible.
        if not isinstance(exc, _DAMAGE):
            log.warning("an unexpected error reading an uploaded ZIP's directory", exc_info=exc)
        raise _damaged(None, exc) from exc


def entry_chunks(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """The decompressed bytes of ``info`` in chunks; a damaged entry raises DamagedArchiveError."""
    try:
        with archive.open(info) as src:
            while chunk := src.read(_CHUNK):
                yield chunk
    except Exception as exc:
        if not isinstance(exc, _DAMAGE):
            log.warning("an unexpected error decompressing ZIP entry %r", info.filename, exc_info=exc)
        raise _damaged(info.filename, exc) from exc


def is_ignorable(parts: tuple[str, ...]) -> bool:
    """macOS and editors add these; they are nobody's data."""
    return any(p == "__MACOSX" or p.startswith("._") or p == ".DS_Store" for p in parts)


def name_key(path: PurePosixPath | str) -> str:
    """Two names a case-insensitive or normalising file system (the uploader's) shows as one."""
    return unicodedata.normalize("NFC", str(path)).casefold()


def check_name(name: str) -> PurePosixPath:
    """The entry's name as a relative path; refused if it could point anywhere else."""
    if not name:
        raise InvalidArchiveError("The ZIP has an entry without a name.")
    if "\x00" in name or "\\" in name:
        raise UnsafeArchiveError(f"The ZIP entry {name!r} has a name that is not a plain relative path.")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/") or (path.parts and ":" in path.parts[0]):
        raise UnsafeArchiveError(f"The ZIP entry {name!r} has an absolute path.")
    if ".." in path.parts:
        raise UnsafeArchiveError(f"The ZIP entry {name!r} points outside the archive ('..').")
    # Real data is files in a few folders; thousands of levels would only cost time (the layout
    # check is quadratic in depth) and recursion in mkdir/rmtree.
    if len(path.parts) > MAX_DEPTH:
        raise InvalidArchiveError(
            f"The ZIP entry {name[:80]!r}… lies {len(path.parts) - 1} folders deep; "
            f"at most {MAX_DEPTH - 1} are accepted."
        )
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise InvalidArchiveError(
                f"The ZIP entry {name[:80]!r}… has a file or folder name longer than {NAME_MAX} bytes."
            )
    return path


def check_type(info: zipfile.ZipInfo) -> None:
    """Refuse links, devices and encrypted entries."""
    name = info.filename
    mode = info.external_attr >> 16
    if mode and stat.S_ISLNK(mode):
        raise UnsafeArchiveError(f"The ZIP entry {name!r} is a symbolic link; links are not accepted.")
    # Many writers leave the file-type bits at 0 (Python's writestr does); only a type
    # that is set and is not a file or folder (device, FIFO, socket) is refused.
    file_type = stat.S_IFMT(mode)
    if file_type and file_type not in (stat.S_IFREG, stat.S_IFDIR):
        raise UnsafeArchiveError(f"The ZIP entry {name!r} is not a plain file or folder.")
    if info.flag_bits & 0x1:
        raise InvalidArchiveError(f"The ZIP entry {name!r} is encrypted.")


def checked_entries(archive: zipfile.ZipFile, limits: ArchiveLimits) -> Iterator[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Every entry (folders included) with its checked path, after the entry count is checked."""
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise ArchiveTooLargeError(f"The ZIP has {len(infos)} entries; at most {limits.max_entries} are accepted.")
    for info in infos:
        path = check_name(info.filename)
        check_type(info)
        yield info, path


class Layout:
    """The files and folders an archive holds, so no two collide once on a user's disk."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.folders: dict[str, str] = {}

    def add_file(self, path: PurePosixPath, name: str) -> None:
        key = name_key(path)
        if key in self.files:
            raise InvalidArchiveError(f"The ZIP holds {name!r} twice (as {self.files[key]!r} as well).")
        if key in self.folders:
            raise InvalidArchiveError(f"The ZIP holds {name!r} both as a file and as a folder.")
        for parent in path.parents:
            if parent == PurePosixPath("."):
                continue
            folder = name_key(parent)
            if folder in self.files:
                raise InvalidArchiveError(
                    f"The ZIP holds {self.files[folder]!r} both as a file and as the folder of {name!r}."
                )
            self.folders.setdefault(folder, str(parent))
        self.files[key] = name


class UnpackBudget:
    """The uncompressed bytes an archive may unpack to, counted as declared and as read."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.declared = 0
        self.read = 0

    def declare(self, size: int) -> None:
        self.declared += size
        if self.declared > self.max_bytes:
            raise ArchiveTooLargeError(f"The ZIP unpacks to more than {self.max_bytes / 1024**2:g} MB.")

    def count(self, size: int) -> None:
        self.read += size
        if self.read > self.max_bytes:
            raise ArchiveTooLargeError(
                f"The ZIP unpacks to more than {self.max_bytes / 1024**2:g} MB (more than its headers declare)."
            )


def read_entry(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: UnpackBudget, *, max_bytes: int, what: str
) -> bytes:
    """The whole entry in memory, at most ``max_bytes`` of it (``what`` names the kind in the message)."""
    parts: list[bytes] = []
    size = 0
    for chunk in entry_chunks(archive, info):
        size += len(chunk)
        budget.count(len(chunk))
        if size > max_bytes:
            raise ArchiveTooLargeError(
                f"The ZIP entry {info.filename[:80]!r} is larger than {max_bytes / 1024**2:g} MB, "
                f"the most a {what} may have."
            )
        parts.append(chunk)
    return b"".join(parts)
