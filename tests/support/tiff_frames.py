"""TIFFs of many tiny frames, written by hand: Pillow's own writer takes minutes for 50 000 frames.

``many_frame_tiff(frames)`` is the attack of issue 12 §2 (tens of thousands of one-pixel
frames inside the upload limit); ``padding_tags`` gives each frame's IFD that many extra
tags, so that reading one IFD costs as much as a client can make it (up to 65 535 tags).
"""

from __future__ import annotations

import struct
from functools import cache

from PIL import TiffTags

_ENTRY = struct.Struct("<HHLL")
_SHORT, _LONG, _BYTE = 3, 4, 1
# ImageWidth, ImageLength, BitsPerSample, Compression (none), Photometric (min-is-black),
# StripOffsets (filled in), SamplesPerPixel, RowsPerStrip, StripByteCounts.
_STRIP_OFFSETS = 273
_BASE_TAGS: tuple[tuple[int, int, int], ...] = (
    (256, _LONG, 1),
    (257, _LONG, 1),
    (258, _SHORT, 8),
    (259, _SHORT, 1),
    (262, _SHORT, 1),
    (_STRIP_OFFSETS, _LONG, 0),
    (277, _SHORT, 1),
    (278, _LONG, 1),
    (279, _LONG, 1),
)


@cache
def _unknown_tag_ids(count: int) -> tuple[int, ...]:
    """Tag ids no reader gives a meaning (so none of them points at more data)."""
    # 0xBC01 marks a Windows Media Photo file, which Pillow refuses.
    known = set(TiffTags.TAGS_V2) | set(TiffTags.TAGS) | {tag for tag, _, _ in _BASE_TAGS} | {0xBC01}
    ids = tuple(tag for tag in range(1, 65536) if tag not in known)[:count]
    if len(ids) < count:
        raise ValueError(f"at most {len(ids)} padding tags")
    return ids


def many_frame_tiff(frames: int, *, padding_tags: int = 0) -> bytes:
    """A little-endian TIFF of ``frames`` 1×1 grey frames, each IFD followed by its pixel."""
    padding = [(tag, _BYTE, 0) for tag in _unknown_tag_ids(padding_tags)]
    entries = sorted([*_BASE_TAGS, *padding])
    ifd_size = 2 + len(entries) * _ENTRY.size + 4
    frame_size = ifd_size + 1
    out = bytearray(b"II*\x00" + struct.pack("<L", 8))
    for index in range(frames):
        start = 8 + index * frame_size
        pixel_at = start + ifd_size
        next_ifd = start + frame_size if index + 1 < frames else 0
        out += struct.pack("<H", len(entries))
        for tag, kind, value in entries:
            out += _ENTRY.pack(tag, kind, 1, pixel_at if tag == _STRIP_OFFSETS else value)
        out += struct.pack("<L", next_ifd)
        out.append(index % 256)
    return bytes(out)
