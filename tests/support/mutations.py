"""Seeded damage to valid documents: what a bad scanner, a broken transfer or an attacker produces.

``mutate(data, rng)`` applies one to three of: bit flips, byte overwrites, truncation, a
duplicated chunk, inserted junk. The first ``keep`` bytes (the type's magic) stay intact
so that the damage reaches the decoder instead of being refused by the type sniffer.
"""

from __future__ import annotations

import random
from collections.abc import Callable

# Values that make length and offset fields extreme.
_INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)


def _flip_bits(data: bytearray, rng: random.Random, keep: int) -> None:
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(keep, len(data))
        data[position] ^= 1 << rng.randrange(8)


def _overwrite_bytes(data: bytearray, rng: random.Random, keep: int) -> None:
    start = rng.randrange(keep, len(data))
    for position in range(start, min(len(data), start + rng.randint(1, 16))):
        data[position] = rng.choice(_INTERESTING) if rng.random() < 0.5 else rng.randrange(256)


def _truncate(data: bytearray, rng: random.Random, keep: int) -> None:
    del data[rng.randrange(keep, len(data)) :]


def _duplicate_chunk(data: bytearray, rng: random.Random, keep: int) -> None:
    start = rng.randrange(keep, len(data))
    chunk = data[start : start + rng.randint(1, 512)]
    at = rng.randrange(keep, len(data) + 1)
    data[at:at] = chunk


def _insert_junk(data: bytearray, rng: random.Random, keep: int) -> None:
    at = rng.randrange(keep, len(data) + 1)
    data[at:at] = rng.randbytes(rng.randint(1, 64))


MUTATIONS: tuple[Callable[[bytearray, random.Random, int], None], ...] = (
    _flip_bits,
    _overwrite_bytes,
    _truncate,
    _duplicate_chunk,
    _insert_junk,
)


def mutate(data: bytes, rng: random.Random, keep: int = 16) -> bytes:
    damaged = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        if len(damaged) <= keep:
            break
        rng.choice(MUTATIONS)(damaged, rng, keep)
    return bytes(damaged)
