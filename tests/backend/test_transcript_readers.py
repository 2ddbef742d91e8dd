"""The PAGE and ALTO readers on generated pages: what this archive's writers and the tools' shapes
write is read back line for line (text, baseline, outline, order), whatever the text holds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from backend.transcripts.alto import alto_xml
from backend.transcripts.alto_reader import is_alto, read_alto
from backend.transcripts.model import TranscriptDocument, TranscriptLine, TranscriptPage
from backend.transcripts.page_reader import is_page, read_page
from backend.transcripts.page_xml import page_xml
from backend.transcripts.reading import ReadPage, baseline_from_polygon
from tests.backend.transcript_files import PAGE_2013, PAGE_2019, GenLine, GenPage, kraken_alto, transkribus_page
from untrusted.xml import parse_xml

WIDTH, HEIGHT = 800, 600
# Text as an archive holds it: any printable character XML 1.0 can carry, no line breaks, no
# leading or trailing space (the writers keep inner spaces; XML attributes keep them all).
_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\ufffe\uffff"),
    max_size=40,
).map(lambda t: " ".join(t.split()))
_X = st.integers(0, WIDTH - 1)
_Y = st.integers(0, HEIGHT - 1)


@st.composite
def lines(draw: st.DrawFn) -> tuple[TranscriptLine, ...]:
    made = []
    for _ in range(draw(st.integers(0, 6))):
        baseline = tuple(draw(st.lists(st.tuples(_X, _Y), min_size=2, max_size=5)))
        polygon = tuple(draw(st.lists(st.tuples(_X, _Y), min_size=3, max_size=8)))
        made.append(TranscriptLine(baseline=baseline, polygon=polygon, text=draw(_TEXT)))
    return tuple(made)


def read(xml: bytes) -> ReadPage:
    root = parse_xml(xml, "page.xml")
    if is_page(root):
        return read_page(root, "page.xml")
    assert is_alto(root)
    return read_alto(root, "page.xml")


def shapes(page_lines: tuple[TranscriptLine, ...]) -> list[tuple[object, ...]]:
    return [(line.text, line.baseline, line.polygon) for line in page_lines]


@settings(max_examples=60, deadline=None)
@given(lines(), st.sampled_from(["page", "alto"]))
def test_this_archives_exports_are_read_back_line_for_line(page_lines: tuple[TranscriptLine, ...], fmt: str) -> None:
    document = TranscriptDocument(title="Brief", writer="Anna Müller")
    page = TranscriptPage(1, WIDTH, HEIGHT, "0001.png", page_lines)
    xml = page_xml(document, page) if fmt == "page" else alto_xml(document, page)
    got = read(xml)
    assert (got.image_name, got.width, got.height, got.writer) == ("0001.png", WIDTH, HEIGHT, "Anna Müller")
    assert shapes(got.lines) == shapes(page_lines)


@st.composite
def gen_pages(draw: st.DrawFn) -> GenPage:
    made = []
    for _ in range(draw(st.integers(1, 7))):
        baseline = tuple(draw(st.lists(st.tuples(_X, _Y), min_size=2, max_size=5)))
        polygon = tuple(draw(st.lists(st.tuples(_X, _Y), min_size=3, max_size=8)))
        text = draw(_TEXT.filter(lambda t: "  " not in t))
        made.append(GenLine(baseline, polygon, text))
    return GenPage("scan.png", WIDTH, HEIGHT, tuple(made), 0)


@settings(max_examples=60, deadline=None)
@given(gen_pages(), st.sampled_from([PAGE_2013, PAGE_2019, "kraken"]))
def test_tool_shaped_files_are_read_in_their_reading_order(page: GenPage, shape: str) -> None:
    xml = kraken_alto(page) if shape == "kraken" else transkribus_page(page, shape)
    got = read(xml)
    assert [line.text for line in got.lines] == [line.text for line in page.lines]
    assert [line.baseline for line in got.lines] == [line.baseline for line in page.lines]
    assert [line.polygon for line in got.lines] == [line.polygon for line in page.lines]


@given(st.lists(st.tuples(st.integers(-1000, 5000), st.integers(-1000, 5000)), min_size=3, max_size=12))
def test_a_derived_baseline_lies_inside_the_outlines_box(polygon: list[tuple[int, int]]) -> None:
    points = tuple((float(x), float(y)) for x, y in polygon)
    (x0, y0), (x1, y1) = baseline_from_polygon(points)
    xs, ys = [x for x, _ in polygon], [y for _, y in polygon]
    assert (x0, x1) == (min(xs), max(xs))
    assert y0 == y1
    assert min(ys) <= y0 <= max(ys)
