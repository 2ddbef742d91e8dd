"""Seeded mutations of valid ZIPs for the fuzz tests: each variant with the name of what was done.

The same seed gives the same variants; a failing one is reproduced from its description.
"""

from __future__ import annotations

import io
import random
import struct
import unicodedata
import zipfile
from collections.abc import Callable, Iterator

LOCAL = b"PK\x03\x04"
CENTRAL = b"PK\x01\x02"
END = b"PK\x05\x06"
# Every compression method zipfile reads, and some it does not (implode, deflate64, PPMd, nonsense).
METHODS = {
    "stored": zipfile.ZIP_STORED,
    "deflate": zipfile.ZIP_DEFLATED,
    "bzip2": zipfile.ZIP_BZIP2,
    "lzma": zipfile.ZIP_LZMA,
}
ALIEN_METHODS = (1, 6, 9, 98, 0xFFFF)

Mutation = Callable[[random.Random, bytes], tuple[str, bytes]]


def build_zip(files: dict[str, bytes], method: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _offsets(data: bytes, signature: bytes) -> list[int]:
    found, at = [], data.find(signature)
    while at >= 0:
        found.append(at)
        at = data.find(signature, at + 1)
    return found


def _flip(data: bytearray, rng: random.Random, start: int, end: int, bits: int) -> list[int]:
    end = min(end, len(data))
    positions = [rng.randrange(start, end) for _ in range(bits)] if end > start else []
    for at in positions:
        data[at] ^= 1 << rng.randrange(8)
    return positions


def flip_anywhere(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    out = bytearray(data)
    where = _flip(out, rng, 0, len(out), rng.randint(1, 16))
    return f"bits flipped at {where}", bytes(out)


def flip_in_headers(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """Flips inside the local headers, the central directory entries or the end record."""
    out = bytearray(data)
    starts = [(at, 30) for at in _offsets(data, LOCAL)] + [(at, 46) for at in _offsets(data, CENTRAL)]
    starts += [(at, 22) for at in _offsets(data, END)]
    at, size = rng.choice(starts)
    where = _flip(out, rng, at + 4, at + size, rng.randint(1, 4))
    return f"header bits flipped at {where}", bytes(out)


def flip_in_data(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """Flips inside an entry's compressed bytes: the decompressor sees a corrupt stream."""
    out = bytearray(data)
    local = rng.choice(_offsets(data, LOCAL))
    size, name_len, extra_len = struct.unpack_from("<I2H", data, local + 18)
    start = local + 30 + name_len + extra_len
    where = _flip(out, rng, start, start + max(1, size), rng.randint(1, 8))
    return f"data bits flipped at {where}", bytes(out)


def truncate(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    cut = rng.randrange(0, len(data))
    return f"truncated to {cut} bytes", data[:cut]


def cut_out(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """A slice removed from the middle: every offset after it points to the wrong place."""
    start = rng.randrange(0, len(data))
    end = min(len(data), start + rng.randint(1, 64))
    return f"bytes {start}:{end} removed", data[:start] + data[end:]


def change_method(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """An entry's method rewritten in its local header, its directory entry, or both."""
    out = bytearray(data)
    method = rng.choice([*METHODS.values(), *ALIEN_METHODS])
    index = rng.randrange(len(_offsets(data, LOCAL)))
    where = rng.choice(["local", "central", "both"])
    if where in ("local", "both"):
        struct.pack_into("<H", out, _offsets(data, LOCAL)[index] + 8, method)
    if where in ("central", "both") and index < len(_offsets(data, CENTRAL)):
        struct.pack_into("<H", out, _offsets(data, CENTRAL)[index] + 10, method)
    return f"entry {index} method set to {method} in {where}", bytes(out)


def change_sizes(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """Declared sizes or CRC rewritten: a lying header (understated, overstated, wrong CRC)."""
    out = bytearray(data)
    index = rng.randrange(len(_offsets(data, CENTRAL)))
    central = _offsets(data, CENTRAL)[index]
    field = rng.choice([("crc", 16), ("compressed", 20), ("size", 24)])
    value = rng.choice([0, 1, 10, 0xFFFFFFFF, rng.randrange(1 << 32)])
    struct.pack_into("<I", out, central + field[1], value)
    if rng.random() < 0.5 and index < len(_offsets(data, LOCAL)):
        struct.pack_into("<I", out, _offsets(data, LOCAL)[index] + field[1] - 2, value)
    return f"entry {index} {field[0]} set to {value}", bytes(out)


def set_flags(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """General-purpose flags (encryption, data descriptor, UTF-8 names) set in one header."""
    out = bytearray(data)
    flags = rng.choice([0x1, 0x8, 0x800, 0x41, 0xFFFF])
    if rng.random() < 0.5:
        struct.pack_into("<H", out, rng.choice(_offsets(data, LOCAL)) + 6, flags)
    else:
        struct.pack_into("<H", out, rng.choice(_offsets(data, CENTRAL)) + 8, flags)
    return f"flags {flags:#x} set", bytes(out)


BYTE_MUTATIONS: tuple[Mutation, ...] = (
    flip_anywhere,
    flip_in_headers,
    flip_in_data,
    truncate,
    cut_out,
    change_method,
    change_sizes,
    set_flags,
)


def mutated(data: bytes, seed: int, count: int) -> Iterator[tuple[str, bytes]]:
    rng = random.Random(seed)
    for n in range(count):
        mutation = BYTE_MUTATIONS[n % len(BYTE_MUTATIONS)]
        what, variant = mutation(rng, data)
        yield f"seed {seed} #{n} {mutation.__name__}: {what}", variant


def crafted_names(rng: random.Random) -> list[tuple[str, list[str]]]:
    """Sets of entry names that a file system cannot hold as given, each with what it tries."""
    long_part = "n" * rng.randint(256, 400)
    deep = "/".join(["d" * 200] * rng.randint(21, 30))
    umlaut = "Seite-Ä"
    nfd = unicodedata.normalize("NFD", umlaut)
    cases = [
        ("component over 255 bytes", [f"{long_part}.png"]),
        ("folder over 255 bytes", [f"{long_part}/a.png"]),
        ("component of 128 two-byte characters", ["ä" * 128 + ".png"]),
        ("path over PATH_MAX", [f"{deep}/a.png"]),
        ("file then folder of the same name", ["p.xml", "p.xml/q.png"]),
        ("folder then file of the same name", ["p.xml/q.png", "p.xml"]),
        ("file then deep folder of the same name", ["a/b.png", "a/b.png/c/d.txt"]),
        ("file and folder differing in case", ["P.xml", "p.xml/q.png"]),
        ("folder and file differing in case", ["p.XML/q.png", "P.xml"]),
        ("file and folder differing in normalisation", [f"{umlaut}.png", f"{nfd}.png/x.txt"]),
        ("the same name twice", ["a.png", "a.png"]),
        ("the same name in two cases", ["a.png", "A.PNG"]),
        ("the same name in two normalisations", [f"{umlaut}.png", f"{nfd}.png"]),
        ("the same name through '.' and '//'", ["x/a.png", "x/./a.png", "x//a.png"]),
        ("a file where the line folder will be", ["_lines/line00000.png", "_lines/line00000.gt.txt"]),
        ("empty and dot names", ["", ".", "./", "a.txt"]),
        ("absolute and parent paths", ["/a.png", "x/../../a.png"]),
        ("a backslash", ["a\\b.png"]),
    ]
    rng.shuffle(cases)
    return cases


def zip_of_names(names: list[str], payload: Callable[[str], bytes], method: int) -> bytes:
    """A ZIP whose entries carry exactly ``names`` (duplicates included; zipfile warns, not refuses)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name in names:
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            archive.writestr(info, payload(name))
    return buffer.getvalue()
