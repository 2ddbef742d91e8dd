"""PAGE XML/ALTO in training ZIPs: a DTD or entity declaration is refused in every encoding
and position libxml2 (kraken's parser) accepts, and nothing is ever loaded or expanded."""

from __future__ import annotations

import codecs
import itertools
from pathlib import Path

import pytest
from lxml import etree

from ocr_service.errors import AppError, ErrorCode
from ocr_service.training.datasets import scan_training_data
from ocr_service.training.xml_safety import hardened_parser, parse_training_xml
from tests.support.training_data import page_set, write_files

SECRET = "geheimnis-7f3a"

# (declared encoding, Python codec, byte-order mark)
ENCODINGS = [
    ("UTF-8", "utf-8", b""),
    ("UTF-8", "utf-8", codecs.BOM_UTF8),
    ("UTF-16", "utf-16-le", codecs.BOM_UTF16_LE),
    ("UTF-16", "utf-16-be", codecs.BOM_UTF16_BE),
    ("UTF-16LE", "utf-16-le", b""),
    ("UTF-16BE", "utf-16-be", b""),
    ("UTF-32", "utf-32-le", codecs.BOM_UTF32_LE),
    ("UTF-32", "utf-32-be", codecs.BOM_UTF32_BE),
    ("UTF-32BE", "utf-32-be", b""),
    ("ISO-8859-1", "latin-1", b""),
]
PREFIXES = {
    "nothing": "",
    "a long comment": "<!-- " + "Kommentar " * 1000 + "-->\n",
    "many comments and PIs": "".join(f"<!-- {n} --><?pi n{n}?>\n" for n in range(300)),
    "whitespace": " \n\t" * 2000,
}
DECLARATIONS = {
    "internal entity": '<!DOCTYPE PcGts [<!ENTITY who "Anna">]>',
    "bare doctype": "<!DOCTYPE PcGts>",
    "external DTD": '<!DOCTYPE PcGts SYSTEM "http://127.0.0.1:9/page.dtd">',
    "public id": '<!DOCTYPE PcGts PUBLIC "-//X//DTD X//EN" "page.dtd">',
    "external entity": '<!DOCTYPE PcGts [<!ENTITY who SYSTEM "file:///etc/passwd">]>',
    "parameter entity": "<!DOCTYPE PcGts [<!ENTITY % p \"<!ENTITY who 'x'>\"> %p;]>",
    "billion laughs": '<!DOCTYPE PcGts [<!ENTITY l0 "ha">'
    + "".join(f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10))
    + "]>",
}


@pytest.fixture(scope="module")
def page() -> tuple[bytes, bytes]:
    files = page_set(1, seed=8, lines_per_page=2, width=600, height=300, font_size=24)
    return files["pages/page000.png"], files["pages/page000.xml"]


def with_declaration(xml: bytes, declaration: str, prefix: str, encoding: tuple[str, str, bytes]) -> bytes:
    declared, codec, bom = encoding
    body = xml.decode("utf-8").split("\n", 1)[1]  # without its own XML declaration
    # The declared entity is used where kraken reads text, as an attack would.
    for entity in ("who", "l9"):
        if f"ENTITY {entity} " in declaration:
            body = body.replace("<Unicode>", f"<Unicode>&{entity};", 1)
    text = f'<?xml version="1.0" encoding="{declared}"?>\n{prefix}{declaration}\n{body}'
    return bom + text.encode(codec)


def kraken_reads(data: bytes, tmp_path: Path) -> bool:
    """Whether lxml's default parser (kraken's) reads ``data`` from a file as kraken opens it."""
    probe = tmp_path / "probe.xml"
    probe.write_bytes(data)
    try:
        with open(probe, "rb") as handle:
            etree.parse(handle)
    except etree.XMLSyntaxError:
        return False
    finally:
        probe.unlink()
    return True


CASES = list(itertools.product(DECLARATIONS, PREFIXES, range(len(ENCODINGS))))


@pytest.mark.parametrize(("declaration", "prefix", "encoding"), CASES)
def test_a_dtd_is_refused_in_every_encoding_and_position(
    tmp_path: Path, page: tuple[bytes, bytes], declaration: str, prefix: str, encoding: int
) -> None:
    image, xml = page
    data = with_declaration(xml, DECLARATIONS[declaration], PREFIXES[prefix], ENCODINGS[encoding])
    write_files(tmp_path, {"p/page000.png": image, "p/page000.xml": data, "p/page001.png": image})
    write_files(tmp_path, {"p/page001.xml": xml.replace(b"page000.png", b"page001.png")})
    with pytest.raises(AppError) as caught:
        scan_training_data(tmp_path, "segmentation")
    assert caught.value.code == ErrorCode.INVALID_TRAINING_DATA
    # Where kraken could read the encoding, the declaration itself is what is refused.
    readable = kraken_reads(with_declaration(xml, "", PREFIXES[prefix], ENCODINGS[encoding]), tmp_path)
    # libxml2 stops a billion laughs while it reads the declarations, before any DTD check.
    expected = ("amplification" if declaration == "billion laughs" else "DOCTYPE") if readable else "not well-formed"
    assert expected in caught.value.message


@pytest.mark.parametrize("encoding", range(len(ENCODINGS)))
def test_the_same_page_without_a_dtd_is_read_in_every_encoding(
    tmp_path: Path, page: tuple[bytes, bytes], encoding: int
) -> None:
    image, xml = page
    for n in range(2):
        data = with_declaration(xml.replace(b"page000.png", f"page{n:03d}.png".encode()), "", "", ENCODINGS[encoding])
        write_files(tmp_path / "d", {f"p/page{n:03d}.png": image, f"p/page{n:03d}.xml": data})
    if kraken_reads(data, tmp_path):
        assert scan_training_data(tmp_path / "d", "segmentation").pages == 2
    else:
        with pytest.raises(AppError) as caught:
            scan_training_data(tmp_path / "d", "segmentation")
        assert "not well-formed" in caught.value.message


def test_the_parser_never_reads_an_external_entity(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    xml = f'<!DOCTYPE r [<!ENTITY s SYSTEM "{secret.as_uri()}">]><r>&s;</r>'.encode()
    root = etree.fromstring(xml, hardened_parser())
    assert SECRET not in etree.tostring(root, encoding="unicode")
    (tmp_path / "page.xml").write_bytes(xml)
    with pytest.raises(AppError) as caught:
        parse_training_xml(tmp_path / "page.xml", "page.xml")
    assert caught.value.code == ErrorCode.INVALID_TRAINING_DATA


def test_the_parser_never_expands_a_billion_laughs(tmp_path: Path) -> None:
    xml = DECLARATIONS["billion laughs"].replace("PcGts", "r").encode() + b"<r>&l9;</r>"
    with pytest.raises(etree.XMLSyntaxError, match="amplification"):
        etree.fromstring(xml, hardened_parser())
    (tmp_path / "page.xml").write_bytes(xml)
    with pytest.raises(AppError) as caught:
        parse_training_xml(tmp_path / "page.xml", "page.xml")
    assert caught.value.code == ErrorCode.INVALID_TRAINING_DATA
