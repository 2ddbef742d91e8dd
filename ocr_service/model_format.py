"""Which model format a file holds, judged by its bytes alone (never by its name).

Only kraken's pickle-free formats pass (safetensors, CoreML): kraken loads ``.ckpt`` files
with ``weights_only=False``, so a pickle could run code the moment it is loaded.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import IO

from ocr_service.errors import AppError, ErrorCode
from ocr_service.model_ref import COREML_SUFFIX, SAFETENSORS_SUFFIX

# safetensors refuses headers over 100 MB itself; a model's header is a few kB.
_MAX_SAFETENSORS_HEADER = 100_000_000

# Magic numbers of files that are certainly no kraken model, with a plain description.
_FOREIGN_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a ZIP archive (PyTorch .pt/.ckpt checkpoints are ZIP files)"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x7fELF", "a program"),
    (b"#!", "a script"),
    (b"\x89HDF", "an HDF5 file (Keras)"),
    (b"\x93NUMPY", "a NumPy array"),
)


def sniff_model_format(path: Path) -> str:
    """The suffix of the model format ``path`` holds, judged by its bytes alone.

    Raises ``INVALID_MODEL`` for anything that is not safetensors or CoreML, in particular
    for pickles and ZIP files (PyTorch checkpoints): kraken loads ``.ckpt`` files with
    ``weights_only=False``, so such a file could run code.
    """
    size = path.stat().st_size
    if size == 0:
        raise AppError(ErrorCode.INVALID_MODEL, "The model file is empty.")
    with open(path, "rb") as handle:
        head = handle.read(16)
        # safetensors first: its 8-byte header length may well start with 0x80 (a header of
        # 2688 bytes is 80 0a 00 …), which a naive pickle check would mistake for a pickle.
        if _is_safetensors(handle, head, size):
            return SAFETENSORS_SUFFIX
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        raise AppError(
            ErrorCode.INVALID_MODEL,
            "The file is a Python pickle (a PyTorch checkpoint or .pt file). Pickles can run code "
            "when loaded and are never accepted; convert the model to .safetensors or .mlmodel.",
        )
    for magic, what in _FOREIGN_MAGIC:
        if head.startswith(magic):
            raise AppError(
                ErrorCode.INVALID_MODEL,
                f"The file is {what}, not a kraken model. Only .safetensors and CoreML .mlmodel files are accepted.",
            )
    if _looks_like_coreml(head):
        return COREML_SUFFIX
    raise AppError(
        ErrorCode.INVALID_MODEL,
        "The file is neither a safetensors nor a CoreML (.mlmodel) model, the only formats accepted.",
    )


def _is_safetensors(handle: IO[bytes], head: bytes, size: int) -> bool:
    """safetensors: u64 little-endian header length, then that many bytes of a JSON object."""
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    if not 2 <= header_len <= _MAX_SAFETENSORS_HEADER or 8 + header_len > size or head[8:9] != b"{":
        return False
    handle.seek(8)
    try:
        header = json.loads(handle.read(header_len))
    except (ValueError, UnicodeDecodeError):
        return False
    if not isinstance(header, dict):
        return False
    tensors = [v for k, v in header.items() if k != "__metadata__"]
    return all(isinstance(t, dict) and {"dtype", "shape", "data_offsets"} <= t.keys() for t in tensors)


def _looks_like_coreml(head: bytes) -> bool:
    """A CoreML model is a protobuf ``Model`` message; coremltools writes field 1
    (``specificationVersion``, a varint: tag 0x08) first, or field 2 (``description``, tag
    0x12) when the version is 0. Anything else is refused before a parser ever sees it."""
    if not head:
        return False
    if head[0] == 0x12:
        return True
    if head[0] != 0x08:
        return False
    # the varint of the specification version: at most a few bytes, then the next field's tag
    for i, byte in enumerate(head[1:6], start=1):
        if not byte & 0x80:
            next_tag = head[i + 1] if i + 1 < len(head) else None
            return next_tag is None or (next_tag & 0x07) in (0, 1, 2, 5)
    return False
