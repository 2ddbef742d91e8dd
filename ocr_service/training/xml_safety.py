"""Reading a training ZIP's PAGE XML and ALTO with no DTD or entity ever loaded or expanded.

kraken's trainer reads these files with lxml's default parser, which expands internal
entities. A byte scan for ``<!DOCTYPE`` misses UTF-16/UTF-32 files and DOCTYPEs behind a
long comment, so the files are parsed here with the same library (libxml2 decodes every
encoding it will decode for kraken), configured to load nothing and expand nothing, and a
document that declares a DOCTYPE in any form is refused before the trainer sees it.
"""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from ocr_service.errors import AppError, ErrorCode


def hardened_parser() -> etree.XMLParser:
    """A fresh parser (lxml parsers must not be shared between threads) that resolves nothing."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        attribute_defaults=False,
        huge_tree=False,
        recover=False,
    )


def parse_training_xml(path: Path, shown: str) -> etree._Element:
    """The root element of ``path``; refused (422) if it is not well-formed or declares a DTD.

    ``shown`` names the file in messages (its path inside the ZIP).
    """
    try:
        # Read through a Python file object as kraken does: libxml2 detects encodings by what it
        # is handed, and this check must see the file exactly as the trainer will.
        with open(path, "rb") as handle:
            tree = etree.parse(handle, hardened_parser())
    except etree.XMLSyntaxError as exc:
        raise AppError(ErrorCode.INVALID_TRAINING_DATA, f"{shown} is not well-formed XML: {exc}") from exc
    info = tree.docinfo
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None:
        raise AppError(
            ErrorCode.INVALID_TRAINING_DATA,
            f"{shown}: XML with a DOCTYPE or entity declarations is not accepted (PAGE XML and ALTO need none).",
        )
    return tree.getroot()
