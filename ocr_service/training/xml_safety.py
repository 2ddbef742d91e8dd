"""Reading a training ZIP's PAGE XML and ALTO with no DTD or entity ever loaded or expanded.

kraken's trainer reads these files with lxml's default parser, which expands internal
entities; the shared :mod:`untrusted.xml` parses them with the same library configured to load
nothing and expand nothing, and refuses a DOCTYPE in any form before the trainer sees it.
"""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from ocr_service.errors import AppError, ErrorCode
from untrusted.errors import XmlRefusedError
from untrusted.xml import hardened_parser, parse_xml

__all__ = ["hardened_parser", "parse_training_xml"]


def parse_training_xml(path: Path, shown: str) -> etree._Element:
    """The root element of ``path``; refused (422) if it is not well-formed or declares a DTD.

    ``shown`` names the file in messages (its path inside the ZIP).
    """
    try:
        # Read through a Python file object as kraken does: libxml2 detects encodings by what it
        # is handed, and this check must see the file exactly as the trainer will.
        with open(path, "rb") as handle:
            return parse_xml(handle, shown)
    except XmlRefusedError as exc:
        raise AppError(ErrorCode.INVALID_TRAINING_DATA, exc.message) from exc
