"""PAGE XML, ALTO and plain text of generated transcripts: valid against the schemas whatever
the lines hold (corrections, odd geometry, combining marks, ſ, ꝛ, right-to-left text, characters
XML cannot hold), and saying what the transcript says. No database, no HTTP."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from backend.documents.models import DatePrecision
from backend.errors import AppError, ErrorCode
from backend.exports.service import ascii_name, content_disposition
from backend.transcripts.alto import alto_xml
from backend.transcripts.geometry import baseline, clamp_points, outline
from backend.transcripts.model import TranscriptDocument, TranscriptLine, TranscriptPage
from backend.transcripts.page_xml import page_xml
from backend.transcripts.reading import line as read_line
from backend.transcripts.text import PAGE_BREAK, clean_text, document_text

SCHEMAS = Path(__file__).parents[1] / "schemas"
PAGE = "{http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15}"
ALTO = "{http://www.loc.gov/standards/alto/ns-v4#}"
NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
# Characters archivists meet: combining marks, long s, r rotunda, Hebrew and Arabic, XML's own
# specials, and what XML 1.0 cannot hold at all (control characters, U+FFFE).
ODD = "aeß ſꝛ\u0308\u0301שלוםمرحبا&<>\"'\x00\x01\x0b\x1f\ufffe\t\n\r"


@pytest.fixture(scope="module")
def page_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(SCHEMAS / "pagecontent.xsd"))


@pytest.fixture(scope="module")
def alto_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(SCHEMAS / "alto-4-3.xsd"))


# Stored geometry as it may come: good points, points past the page, NaN, nonsense.
_coordinate = st.one_of(
    st.integers(-50, 400), st.floats(-50, 400), st.just(float("nan")), st.just(float("inf")), st.just("x")
)
_points = st.lists(st.tuples(_coordinate, _coordinate).map(list), max_size=6)
_text = st.text(alphabet=st.sampled_from(ODD) | st.characters(codec="utf-8"), max_size=30)


@st.composite
def transcript_lines(draw: Any, width: int, height: int) -> TranscriptLine:
    corrected = draw(st.booleans())
    return TranscriptLine(
        baseline=clamp_points(draw(_points), width, height),
        polygon=clamp_points(draw(_points), width, height),
        text=draw(_text),
        ocr_text=draw(_text) if corrected else None,
        confidence=draw(st.none() | st.floats(allow_nan=True, allow_infinity=True)),
    )


@st.composite
def transcript_pages(draw: Any, number: int = 1) -> TranscriptPage:
    width, height = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    lines = draw(st.lists(transcript_lines(width, height), max_size=5))
    return TranscriptPage(number, width, height, f"{number:04d}.png", tuple(lines))


@st.composite
def transcripts(draw: Any) -> TranscriptDocument:
    count = draw(st.integers(1, 3))
    return TranscriptDocument(
        title=draw(_text),
        writer=draw(st.none() | _text),
        date=draw(st.none() | st.dates(date(1800, 1, 1), date(2000, 12, 31))),
        date_precision=draw(st.none() | st.sampled_from(DatePrecision)),
        pages=tuple(draw(transcript_pages(n)) for n in range(1, count + 1)),
    )


def _lines(root: etree._Element, tag: str) -> list[etree._Element]:
    return list(root.iter(tag))


@SETTINGS
@given(transcripts())
def test_page_xml_of_any_transcript_is_valid_and_holds_every_line_in_order(
    page_schema: etree.XMLSchema, doc: TranscriptDocument
) -> None:
    for page in doc.pages:
        root = etree.fromstring(page_xml(doc, page, now=NOW))
        page_schema.assertValid(root)
        lines = _lines(root, f"{PAGE}TextLine")
        assert [line.findtext(f"{PAGE}TextEquiv[@index='0']/{PAGE}Unicode") or "" for line in lines] == [
            clean_text(line.text) for line in page.lines
        ]
        assert [line.get("custom") for line in lines] == [f"readingOrder {{index:{n};}}" for n in range(len(lines))]
        # One TextEquiv a line (eScriptorium joins them all); the OCR's reading a UserAttribute.
        assert [len(line.findall(f"{PAGE}TextEquiv")) for line in lines] == [1] * len(lines)
        alternatives = [_ocr_attribute(line) for line in lines]
        assert alternatives == [
            None if line.ocr_text is None else clean_text(line.ocr_text) or "" for line in page.lines
        ]


def _ocr_attribute(line: etree._Element, name: str = "ocrText") -> str | None:
    found = line.find(f"{PAGE}UserDefined/{PAGE}UserAttribute[@name='{name}']")
    return None if found is None else found.get("value")


@SETTINGS
@given(transcripts())
def test_alto_of_any_transcript_is_valid_and_holds_every_line_in_order(
    alto_schema: etree.XMLSchema, doc: TranscriptDocument
) -> None:
    for page in doc.pages:
        root = etree.fromstring(alto_xml(doc, page, now=NOW))
        alto_schema.assertValid(root)
        strings = [line.find(f"{ALTO}String") for line in _lines(root, f"{ALTO}TextLine")]
        assert [string.get("CONTENT") for string in strings if string is not None] == [
            clean_text(line.text) for line in page.lines
        ]
        alternatives = [string.findtext(f"{ALTO}ALTERNATIVE") for string in strings if string is not None]
        assert alternatives == [
            None if line.ocr_text is None else clean_text(line.ocr_text) or "" for line in page.lines
        ]


@SETTINGS
@given(transcript_pages())
def test_every_coordinate_written_is_a_whole_pixel_inside_the_page(page: TranscriptPage) -> None:
    doc = TranscriptDocument(title="t", pages=(page,))
    page_root = etree.fromstring(page_xml(doc, page, now=NOW))
    alto_root = etree.fromstring(alto_xml(doc, page, now=NOW))
    # PAGE: "x,y x,y"; ALTO: "x y x y", as kraken and eScriptorium write it (eScriptorium's reader
    # splits at spaces only: "x,y" pairs lost every line's baseline and outline there).
    pairs: list[list[str]] = []
    for points in [e.get("points") for e in page_root.iter(f"{PAGE}Coords", f"{PAGE}Baseline")]:
        assert points is not None and re.fullmatch(r"\d+,\d+( \d+,\d+)+", points), points
        pairs += [pair.split(",") for pair in points.split()]
    alto_lists = [e.get("POINTS") for e in alto_root.iter(f"{ALTO}Polygon")]
    alto_lists += [e.get("BASELINE") for e in alto_root.iter(f"{ALTO}TextLine")]
    for points in alto_lists:
        assert points is not None and re.fullmatch(r"\d+ \d+( \d+ \d+)+", points), points
        numbers = points.split()
        pairs += [[x, y] for x, y in zip(numbers[0::2], numbers[1::2], strict=True)]
    for x, y in pairs:
        assert 0 <= int(x) < page.width and 0 <= int(y) < page.height


def test_good_geometry_is_written_as_it_is() -> None:
    line = TranscriptLine(((10, 40), (90, 42)), ((10, 10), (90, 10), (90, 45), (10, 45)), "Liebe Mutter")
    assert outline(line, 100, 50) == line.polygon
    assert baseline(line, 100, 50) == line.baseline


def test_a_line_without_geometry_keeps_its_text_with_a_derived_outline_and_baseline(
    page_schema: etree.XMLSchema, alto_schema: etree.XMLSchema
) -> None:
    lonely = TranscriptLine((), (), "nur Text")
    baseline_only = TranscriptLine(((5, 30), (60, 30)), (), "nur Grundlinie")
    polygon_only = TranscriptLine((), ((5, 10), (60, 10), (60, 35), (5, 35)), "nur Umriss")
    page = TranscriptPage(1, 100, 50, "0001.png", (lonely, baseline_only, polygon_only))
    assert outline(baseline_only, 100, 50) == ((5, 30), (60, 30), (60, 30), (5, 30))
    assert baseline(polygon_only, 100, 50) == ((5, 35), (60, 35))
    assert baseline(TranscriptLine(((7, 8),), (), "x"), 100, 50) == ((7, 8), (7, 8))
    doc = TranscriptDocument(title="t", pages=(page,))
    page_root = etree.fromstring(page_xml(doc, page, now=NOW))
    page_schema.assertValid(page_root)
    alto_root = etree.fromstring(alto_xml(doc, page, now=NOW))
    alto_schema.assertValid(alto_root)
    assert [e.text for e in page_root.iter(f"{PAGE}Unicode")] == ["nur Text", "nur Grundlinie", "nur Umriss"]


def test_an_empty_page_is_valid_in_both_formats(page_schema: etree.XMLSchema, alto_schema: etree.XMLSchema) -> None:
    page = TranscriptPage(3, 640, 480, "0003.png")
    doc = TranscriptDocument(title="Leer", pages=(page,))
    page_root = etree.fromstring(page_xml(doc, page, now=NOW))
    page_schema.assertValid(page_root)
    assert page_root.find(f"{PAGE}Page").attrib == {
        "imageFilename": "0003.png",
        "imageWidth": "640",
        "imageHeight": "480",
    }
    alto_root = etree.fromstring(alto_xml(doc, page, now=NOW))
    alto_schema.assertValid(alto_root)
    assert alto_root.find(f".//{ALTO}Page").get("PHYSICAL_IMG_NR") == "3"


def test_characters_xml_cannot_hold_are_dropped_and_breaks_become_spaces() -> None:
    assert clean_text("a\x00b\x01c\x0b\x1f\ufffed") == "abcd"
    assert clean_text("eins\nzwei\r\n\tdrei") == "eins zwei drei"
    # Everything XML holds stays as it is, in its own normal form (no folding, no reordering).
    kept = "ſ ꝛ e\u0301 שלום & < > \" '"
    assert clean_text(kept) == kept and not unicodedata.is_normalized("NFC", "e\u0301")


def test_writer_date_and_title_travel_as_metadata() -> None:
    page = TranscriptPage(1, 10, 10, "0001.png")
    doc = TranscriptDocument("Brief", "Anna Müller", date(1917, 12, 1), DatePrecision.MONTH, (page,))
    page_root = etree.fromstring(page_xml(doc, page, now=NOW))
    items = {item.get("name"): (item.get("type"), item.get("value")) for item in page_root.iter(f"{PAGE}MetadataItem")}
    assert items == {"writer": ("author", "Anna Müller"), "date": ("other", "1917-12")}
    assert page_root.findtext(f"{PAGE}Metadata/{PAGE}Created") == "2026-11-26T06:00:00Z"
    alto_root = etree.fromstring(alto_xml(doc, page, now=NOW))
    tags = {tag.get("ID"): tag.get("LABEL") for tag in alto_root.iter(f"{ALTO}OtherTag")}
    assert tags == {"title": "Brief", "writer": "Anna Müller", "date": "1917-12"}
    assert alto_root.findtext(f".//{ALTO}sourceImageInformation/{ALTO}fileName") == "0001.png"


def test_a_correction_is_the_main_text_and_the_ocr_reading_its_alternative() -> None:
    line = TranscriptLine(((1, 9), (9, 9)), ((1, 1), (9, 1), (9, 9)), "Weihnachten", "Weihnaehten", 0.42)
    confirmed = TranscriptLine(((1, 9), (9, 9)), ((1, 1), (9, 1), (9, 9)), "Mutter", None, 0.9)
    page = TranscriptPage(1, 10, 10, "0001.png", (line, confirmed))
    doc = TranscriptDocument("t", pages=(page,))
    page_root = etree.fromstring(page_xml(doc, page, now=NOW))
    first, second = page_root.iter(f"{PAGE}TextLine")
    equivs = [(e.get("index"), e.get("conf"), e.findtext(f"{PAGE}Unicode")) for e in first.iter(f"{PAGE}TextEquiv")]
    assert equivs == [("0", None, "Weihnachten")]
    assert (_ocr_attribute(first), _ocr_attribute(first, "ocrConfidence")) == ("Weihnaehten", "0.4200")
    assert _ocr_attribute(second) is None
    assert [(e.get("index"), e.get("conf")) for e in second.iter(f"{PAGE}TextEquiv")] == [("0", "0.9000")]
    alto_root = etree.fromstring(alto_xml(doc, page, now=NOW))
    first_alto, second_alto = alto_root.iter(f"{ALTO}TextLine")
    assert first_alto.get("CS") == "true" and second_alto.get("CS") is None
    assert first_alto.find(f"{ALTO}String/{ALTO}ALTERNATIVE").text == "Weihnaehten"
    assert second_alto.find(f"{ALTO}String").get("WC") == "0.9000"


def test_plain_text_is_the_lines_in_reading_order_with_a_form_feed_between_pages() -> None:
    def page(number: int, *texts: str) -> TranscriptPage:
        lines = tuple(TranscriptLine((), (), text) for text in texts)
        return TranscriptPage(number, 10, 10, f"{number:04d}.png", lines)

    doc = TranscriptDocument("t", pages=(page(1, "Liebe Mutter,", "wie geht es"), page(2), page(3, "Dein\nSohn", "")))
    text = "".join(document_text(doc))
    assert text == "Liebe Mutter,\nwie geht es\n\f\fDein Sohn\n\n"
    assert [p.splitlines() for p in text.split(PAGE_BREAK)] == [["Liebe Mutter,", "wie geht es"], [], ["Dein Sohn", ""]]


@given(st.text(max_size=300))
def test_a_download_name_is_safe_ascii_whatever_the_title(title: str) -> None:
    name = ascii_name(title, "document-7")
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) and len(name) <= 80
    header = content_disposition(title, "document-7", "zip")
    assert header.isascii() and not re.search(r"[\x00-\x1f\x7f]", header)
    plain = re.fullmatch(r'attachment; filename="([^"/\\]+)"; filename\*=UTF-8\'\'([A-Za-z0-9%._~-]+)', header)
    assert plain is not None, header
    assert plain[1] == f"{name}.zip"
    readable = unquote(plain[2])
    assert not re.search(r"[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]", readable), readable
    for shown in (name, readable):
        stem = unicodedata.normalize("NFKD", shown.partition(".")[0]).rstrip(" .")
        assert not re.fullmatch(r"(?i)con|prn|aux|nul|com[0-9]|lpt[0-9]", stem), shown


def test_a_download_name_keeps_what_it_can_of_the_title() -> None:
    assert ascii_name("Brief an Müller, 1917/12", "d") == "Brief_an_Mueller_1917_12"
    assert ascii_name("../../etc/passwd", "d") == "etc_passwd"
    assert ascii_name("שלום", "document-3") == "document-3"
    assert [ascii_name(t, "d") for t in ("CON", "nul.txt", "Com1", "Console", "LPT9.tar.gz")] == [
        "CON_",
        "nul_.txt",
        "Com1_",
        "Console",
        "LPT9_.tar.gz",
    ]
    assert "%E2%80%AE" not in content_disposition("Brief \u202etxt.exe", "d", "zip")
    # What browsers save as: filename*, its stem no device either.
    for title, saved in [
        ("CON", "CON_.zip"),
        ("COM¹", "COM¹_.zip"),
        ("AUX_", "AUX_.zip"),
        ("CON .txt", "CON_.txt.zip"),
    ]:
        assert content_disposition(title, "d", "zip").endswith("filename*=UTF-8''" + quote(saved, safe="")), title
    header = content_disposition('Grüße "aus"\r\nBerlin/Wien', "d", "txt")
    assert (
        header == 'attachment; filename="Gruesse_aus_Berlin_Wien.txt"; '
        "filename*=UTF-8''Gr%C3%BC%C3%9Fe%20_aus_Berlin_Wien.txt"
    )


_COORD = st.integers(min_value=0, max_value=2000).map(float)
_FEW = st.lists(st.tuples(_COORD, _COORD), max_size=2).map(tuple)


@SETTINGS
@given(_FEW, st.lists(st.tuples(_COORD, _COORD), max_size=1).map(tuple), st.sampled_from(["", " ", "\x7f", "Mutter"]))
def test_a_line_of_few_points_is_placed_where_they_span_and_else_never_loses_text(
    polygon: tuple[tuple[float, float], ...], base: tuple[tuple[float, float], ...], text: str
) -> None:
    """Two corners make a box, two points on one height a baseline; what spans nothing is passed
    over when it holds no text and refused, naming the line, when it does."""
    given_points = polygon + base
    spans = len({x for x, _ in given_points}) > 1
    try:
        made = read_line(base, polygon, text, None, 400.0, ("p.xml", "the TextLine 'l9'"))
    except AppError as refused:
        assert refused.code is ErrorCode.IMPORT_INVALID_XML and "'l9'" in refused.message and "p.xml" in refused.message
        assert not spans and text.strip("\x7f ").strip()
        return
    if made is None:
        assert not spans and not text.strip("\x7f ").strip()
        return
    assert spans and len(made.polygon) >= 3 and len(made.baseline) >= 2
    xs = [x for x, _ in given_points]
    assert all(min(xs) <= x <= max(xs) for x, _ in (*made.polygon, *made.baseline))
    assert made.text == text.replace("\x7f", "")
