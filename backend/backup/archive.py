"""The backup archive: its layout, its manifest, and reading one that may have been tampered with.

An archive is one uncompressed USTAR tar file::

    originals/<32 hex>              each document's original, under its storage key's name
    tables/<nnn>-<table>.jsonl.gz   one table's rows, one JSON object a line (see ``encode_value``)
    models/<path in the store>      the OCR service's model store files (``--models-dir``)
    manifest.json                   written last: versions, row counts, sha256 and size of every member
    manifest.sha256                 the manifest's own sha256

Reading trusts nothing in the file: every header is parsed one block at a time before any data is
touched, only regular files with names of the shapes above are accepted (no links, no pax or GNU
extension headers, so no traversal and no unbounded header), each member's size must be the
manifest's, and every read of a member checks its sha256 when it reaches the end.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

FORMAT = "familienarchiv-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# The manifest's own sha256 (hex and a newline), so that no byte of the archive goes unchecked.
MANIFEST_SUM = "manifest.sha256"
# A manifest lists a few entries per document and table; far below this for any family archive.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
# One row as JSON: a line of many points is a few hundred KiB; a longer row is refused, not read whole.
MAX_ROW_BYTES = 16 * 1024 * 1024
MAX_MEMBERS = 10_000_000
_BLOCK = tarfile.BLOCKSIZE
_CHUNK = 1024 * 1024

ORIGINAL = re.compile(r"originals/([0-9a-f]{32})")
TABLE = re.compile(r"tables/([0-9]{3})-([a-z_][a-z0-9_]{0,62})\.jsonl\.gz")
MODEL_PART = re.compile(r"[A-Za-z0-9._-]{1,128}")
MAX_MODEL_DEPTH = 4


class BackupError(Exception):
    """A backup or restore cannot go on; the message says why in plain words (the CLI prints it)."""


def is_model_path(relative: str) -> bool:
    parts = relative.split("/")
    return 0 < len(parts) <= MAX_MODEL_DEPTH and all(
        MODEL_PART.fullmatch(part) and part not in (".", "..") for part in parts
    )


def member_kind(name: str) -> str | None:
    """ "manifest", "original", "table" or "model" for an acceptable member name; None otherwise."""
    if name in (MANIFEST, MANIFEST_SUM):
        return "manifest"
    if ORIGINAL.fullmatch(name):
        return "original"
    if TABLE.fullmatch(name):
        return "table"
    if name.startswith("models/") and is_model_path(name.removeprefix("models/")):
        return "model"
    return None


def table_member(position: int, table: str) -> str:
    return f"tables/{position:03d}-{table}.jsonl.gz"


# Values: JSON's own types stand for themselves; everything else is a tagged object {"$": tag, "v": ...}.
def encode_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return {"$": "datetime", "v": value.isoformat()}
    if isinstance(value, date):
        return {"$": "date", "v": value.isoformat()}
    if isinstance(value, time):
        return {"$": "time", "v": value.isoformat()}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$": "bytes", "v": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Decimal):
        return {"$": "decimal", "v": str(value)}
    if isinstance(value, dict | list):
        # A JSON column's document; tagged, so a key "$" in it is never taken for a tag.
        return {"$": "json", "v": value}
    raise TypeError(f"cannot back up a value of type {type(value).__name__}")


_DECODERS: dict[str, Any] = {
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "bytes": lambda v: base64.b64decode(v, validate=True),
    "decimal": Decimal,
}


def decode_value(value: Any) -> Any:
    if not isinstance(value, dict):
        if isinstance(value, list):
            raise ValueError("an untagged list")
        return value
    if set(value) != {"$", "v"}:
        raise ValueError("an object that is not a tagged value")
    tag, inner = value["$"], value["v"]
    if tag == "json":
        if not isinstance(inner, dict | list):
            raise ValueError("a json value that is neither object nor list")
        return inner
    decoder = _DECODERS.get(tag)
    if decoder is None or not isinstance(inner, str):
        raise ValueError(f"an unknown tag {tag!r}")
    result = decoder(inner)
    if isinstance(result, datetime) and result.tzinfo is None:
        raise ValueError("a datetime without a time zone")
    return result


def encode_row(row: dict[str, Any]) -> bytes:
    # ensure_ascii: a lone surrogate (text from outside) has no UTF-8 form; escaped it round-trips.
    return json.dumps({key: encode_value(value) for key, value in row.items()}, ensure_ascii=True).encode() + b"\n"


def decode_row(line: bytes, columns: frozenset[str]) -> dict[str, Any]:
    try:
        raw = json.loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError: a bomb of nested brackets
        raise ValueError(f"not JSON ({type(exc).__name__})") from exc
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    if set(raw) != columns:
        raise ValueError(f"columns {sorted(raw)} instead of {sorted(columns)}")
    return {key: decode_value(value) for key, value in raw.items()}


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class TableEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    member: str
    rows: int = Field(ge=0)
    columns: list[str] = Field(max_length=1000)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["familienarchiv-backup"]
    format_version: Literal[1]
    app_version: str = Field(max_length=100)
    alembic_revision: str = Field(pattern=r"^[0-9A-Za-z_]{1,64}$")
    created_at: datetime
    database_dialect: str = Field(max_length=32)
    tables: list[TableEntry] = Field(max_length=10_000)
    files: dict[str, FileEntry]
    models_included: bool
    left_out: list[str] = Field(max_length=1000)


@dataclass(frozen=True)
class Member:
    name: str
    offset: int
    size: int


class MemberReader(io.RawIOBase):
    """One member's bytes, read with ``pread`` (several members can be open at once on one file),
    hashed as they are read; reaching the end with a sha256 other than the manifest's raises."""

    def __init__(self, fd: int, member: Member, sha256: str) -> None:
        super().__init__()
        self._fd = fd
        self._member = member
        self._expected = sha256
        self._position = 0
        self._digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._member.size - self._position
        if left <= 0:
            return 0
        data = os.pread(self._fd, min(len(buffer), left), self._member.offset + self._position)
        if not data:
            raise BackupError(f"the archive ends inside {self._member.name}: it is truncated")
        buffer[: len(data)] = data
        self._position += len(data)
        self._digest.update(data)
        if self._position == self._member.size and self._digest.hexdigest() != self._expected:
            raise BackupError(f"{self._member.name} is damaged: its checksum differs from the manifest's")
        return len(data)


class BackupArchive:
    """An archive opened for reading: its headers scanned and its manifest checked against them.

    Nothing of a member is trusted before its checksum: :meth:`open_member` verifies as it reads.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file = path.open("rb")
        except OSError as exc:
            raise BackupError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            self.members = _scan(self._file)
            self.manifest = self._read_manifest()
        except BaseException:
            self._file.close()
            raise

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> BackupArchive:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _read_manifest(self) -> Manifest:
        member = self.members.get(MANIFEST)
        if member is None:
            raise BackupError("this is no backup archive (it has no manifest.json) or it is truncated")
        if member.size > MAX_MANIFEST_BYTES:
            raise BackupError("the archive's manifest is implausibly large; refused")
        data = os.pread(self._file.fileno(), member.size, member.offset)
        checksum = self.members.get(MANIFEST_SUM)
        expected = (
            b"" if checksum is None or checksum.size != 65 else os.pread(self._file.fileno(), 65, checksum.offset)
        )
        if expected != hashlib.sha256(data).hexdigest().encode() + b"\n":
            raise BackupError("the archive's manifest is damaged (its checksum differs)")
        try:
            manifest = Manifest.model_validate_json(data)
        except ValidationError as exc:
            raise BackupError(f"the archive's manifest is not valid: {exc.errors()[0]['msg']}") from exc
        listed = set(manifest.files) | {MANIFEST, MANIFEST_SUM}
        if missing := sorted(listed - set(self.members)):
            raise BackupError(f"the archive lacks members its manifest lists (truncated?): {', '.join(missing[:5])}")
        if extra := sorted(set(self.members) - listed):
            raise BackupError(f"the archive holds members its manifest does not list: {', '.join(extra[:5])}")
        for name, entry in manifest.files.items():
            if self.members[name].size != entry.size:
                raise BackupError(f"{name} has {self.members[name].size} bytes, the manifest says {entry.size}")
        seen: set[str] = set()
        for position, table in enumerate(manifest.tables):
            if table.member != table_member(position, table.name) or table.member not in manifest.files:
                raise BackupError(f"the manifest's table {table.name} names no table member of the archive")
            if table.name in seen or len(set(table.columns)) != len(table.columns):
                raise BackupError(f"the manifest lists table {table.name} or one of its columns twice")
            seen.add(table.name)
        return manifest

    def open_member(self, name: str) -> BinaryIO:
        """The member's bytes, checked against the manifest's sha256 as they are read to the end."""
        reader = MemberReader(self._file.fileno(), self.members[name], self.manifest.files[name].sha256)
        return io.BufferedReader(reader, _CHUNK)

    def check_member(self, name: str) -> None:
        with self.open_member(name) as member:
            while member.read(_CHUNK):
                pass

    def rows(self, table: TableEntry) -> Iterator[dict[str, Any]]:
        """The table's rows, decoded; a row that does not parse or a count other than the manifest's raises."""
        columns = frozenset(table.columns)
        count = 0
        with self.open_member(table.member) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as lines:
            while True:
                try:
                    line = lines.readline(MAX_ROW_BYTES + 1)
                except (OSError, EOFError) as exc:
                    raise BackupError(f"{table.member} is not a readable gzip stream ({exc})") from exc
                if not line:
                    break
                count += 1
                if count > table.rows:
                    raise BackupError(f"{table.member} holds more rows than the manifest's {table.rows}")
                if len(line) > MAX_ROW_BYTES or not line.endswith(b"\n"):
                    raise BackupError(f"row {count} of {table.member} is too long or cut off")
                try:
                    yield decode_row(line, columns)
                except ValueError as exc:
                    raise BackupError(f"row {count} of {table.member} cannot be read: {exc}") from exc
        if count != table.rows:
            raise BackupError(f"{table.member} holds {count} rows, the manifest says {table.rows}")

    def originals(self) -> list[str]:
        return sorted(name for name in self.manifest.files if ORIGINAL.fullmatch(name))

    def models(self) -> list[str]:
        return sorted(name for name in self.manifest.files if name.startswith("models/"))


def _scan(file: BinaryIO) -> dict[str, Member]:
    """Every member's name, offset and size, from headers parsed one 512-byte block at a time."""
    members: dict[str, Member] = {}
    total = os.fstat(file.fileno()).st_size
    offset = 0
    while True:
        block = os.pread(file.fileno(), _BLOCK, offset)
        if len(block) < _BLOCK:
            raise BackupError("the archive is truncated (it ends without the tar end marker)")
        if block == bytes(_BLOCK):
            # The end: two zero blocks, zeros up to a whole tar record, and not one byte more or less.
            end = -(-(offset + 2 * _BLOCK) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE
            if total != end:
                raise BackupError("the archive is truncated or has bytes after its end")
            _check_zero(file, offset, end, "after the end of the archive")
            return members
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
        except (tarfile.HeaderError, UnicodeDecodeError) as exc:
            raise BackupError(f"the archive is damaged: a tar header at byte {offset} is invalid ({exc})") from exc
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            raise BackupError(f"the archive holds {info.name!r}, which is not a plain file (links are refused)")
        if member_kind(info.name) is None:
            raise BackupError(f"the archive holds a member with an unexpected name: {info.name!r}")
        # The checksum leaves out bytes after a field's terminator: the header must be exactly as written.
        if info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict") != block:
            raise BackupError(f"the archive is damaged: the tar header at byte {offset} is not as it was written")
        if info.name in members:
            raise BackupError(f"the archive holds {info.name!r} twice")
        if len(members) >= MAX_MEMBERS:
            raise BackupError("the archive holds too many members")
        data = offset + _BLOCK
        if data + info.size > total:
            raise BackupError(f"the archive is truncated (inside {info.name})")
        members[info.name] = Member(info.name, data, info.size)
        offset = data + -(-info.size // _BLOCK) * _BLOCK
        # The padding is covered by no checksum: it must be zeros, so that no byte of the file goes unchecked.
        _check_zero(file, data + info.size, offset, f"after {info.name}")


def _check_zero(file: BinaryIO, start: int, end: int, where: str) -> None:
    while start < end:
        chunk = os.pread(file.fileno(), min(_CHUNK, end - start), start)
        if not chunk:
            raise BackupError(f"the archive is truncated ({where})")
        if chunk.count(0) != len(chunk):
            raise BackupError(f"the archive is damaged: stray bytes {where}")
        start += len(chunk)
