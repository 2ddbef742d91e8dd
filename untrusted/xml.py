"""Parsing XML a client sent with no DTD or entity ever loaded or expanded.

lxml's default parser expands internal entities. A byte scan for ``<!DOCTYPE`` misses UTF-16
and UTF-32 files and DOCTYPEs behind a long comment, so files are parsed with libxml2 itself
(it decodes every encoding it accepts), configured to load nothing and expand nothing, and a
document that declares a DOCTYPE in any form is refused.
"""

from __future__ import annotations

from typing import BinaryIO

from lxml import etree

from untrusted.errors import XmlRefusedError


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


def parse_xml(source: bytes | BinaryIO, shown: str) -> etree._Element:
    """The root element of ``source``; :class:`XmlRefusedError` if it is not well-formed or declares
    a DTD. ``shown`` names the file in messages (e.g. its path inside a ZIP)."""
    try:
        if isinstance(source, bytes):
            tree = etree.fromstring(source, hardened_parser()).getroottree()
        else:
            tree = etree.parse(source, hardened_parser())
    except etree.XMLSyntaxError as exc:
        raise XmlRefusedError(f"{shown} is not well-formed XML: {exc}") from exc
    info = tree.docinfo
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None:
        raise XmlRefusedError(
            f"{shown}: XML with a DOCTYPE or entity declarations is not accepted (PAGE XML and ALTO need none)."
        )
    return tree.getroot()
