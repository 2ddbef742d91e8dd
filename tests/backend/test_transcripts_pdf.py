"""The searchable PDF (backend/transcripts/pdf.py), read back with pdfium: every line's text is
found by a viewer's search, on its page, where the line is; the page images are upright."""

from __future__ import annotations

import io
import math
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Sequence

import pypdfium2
import pypdfium2.raw as pdfium_c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from backend.transcripts.model import Point, TranscriptDocument, TranscriptLine, TranscriptPage
from backend.transcripts.pdf import JpegOriginal, PageArt, layer_text, write_searchable_pdf

DPI = 300.0
# A line's found text may stand this many pixels beyond its polygon's box (rounding of pdfium's boxes).
SLACK = 3.0


def line(text: str, x: int, y: int, length: int, height: int = 60, turn: float = 0.0) -> TranscriptLine:
    """A line whose baseline starts at (x, y) and runs ``length`` pixels at ``turn`` degrees
    (counter-clockwise, as seen on the page), its polygon ``height`` pixels high above it."""
    dx, dy = math.cos(math.radians(turn)), -math.sin(math.radians(turn))  # y runs down
    up = (dy, -dx)  # a quarter turn from the baseline, towards the top of the page

    def at(along: float, above: float) -> Point:
        return round(x + dx * along + up[0] * above), round(y + dy * along + up[1] * above)

    below = height // 5
    return TranscriptLine(
        baseline=(at(0, 0), at(length / 2, 0), at(length, 0)),
        polygon=(at(0, height - below), at(length, height - below), at(length, -below), at(0, -below)),
        text=text,
    )


def page(number: int, *lines: TranscriptLine, width: int = 1200, height: int = 1600) -> TranscriptPage:
    return TranscriptPage(number=number, width=width, height=height, image_name=f"p{number}.png", lines=lines)


def blank(tp: TranscriptPage, mode: str = "RGB") -> PageArt:
    return PageArt(Image.new(mode, (tp.width, tp.height), "white"), DPI)


def build(pages: Sequence[tuple[TranscriptPage, PageArt]]) -> pypdfium2.PdfDocument:
    out = io.BytesIO()
    write_searchable_pdf(TranscriptDocument(title="Brief", pages=tuple(p for p, _ in pages)), pages, out)
    return pypdfium2.PdfDocument(out.getvalue())


def found_box(pdf: pypdfium2.PdfDocument, number: int, text: str) -> tuple[float, float, float, float]:
    """The box (page pixels: left, top, right, bottom) of ``text`` as a viewer's search finds
    it on page ``number``; fails if it is not there."""
    pdf_page = pdf[number - 1]
    scale = DPI / 72
    height = pdf_page.get_height()
    textpage = pdf_page.get_textpage()
    match = textpage.search(text, match_case=True, match_whole_word=False).get_next()
    assert match is not None, f"{text!r} not found in {textpage.get_text_range()!r}"
    start, count = match
    boxes = [textpage.get_charbox(start + i) for i in range(count)]
    left, bottom = min(b[0] for b in boxes), min(b[1] for b in boxes)
    right, top = max(b[2] for b in boxes), max(b[3] for b in boxes)
    return left * scale, (height - top) * scale, right * scale, (height - bottom) * scale


def polygon_box(tl: TranscriptLine) -> tuple[float, float, float, float]:
    xs = [p[0] for p in tl.polygon]
    ys = [p[1] for p in tl.polygon]
    return min(xs), min(ys), max(xs), max(ys)


def assert_on_line(found: tuple[float, float, float, float], tl: TranscriptLine) -> None:
    left, top, right, bottom = polygon_box(tl)
    assert found[0] >= left - SLACK and found[1] >= top - SLACK, (found, (left, top, right, bottom))
    assert found[2] <= right + SLACK and found[3] <= bottom + SLACK, (found, (left, top, right, bottom))
    # And it covers the line, not a corner of it.
    assert (found[2] - found[0]) >= 0.9 * (right - left) and (found[3] - found[1]) >= 0.9 * (bottom - top)


def test_every_line_is_found_on_its_page_where_the_line_is() -> None:
    first = page(1, line("Liebe Mutter,", 100, 200, 700), line("wir sind gut angekommen.", 100, 320, 900))
    second = page(2, line("Dein Heinrich", 300, 900, 500, height=90))
    pdf = build([(first, blank(first)), (second, blank(second))])
    assert len(pdf) == 2
    for tp in (first, second):
        for tl in tp.lines:
            assert_on_line(found_box(pdf, tp.number, tl.text), tl)
    assert "Dein Heinrich" not in pdf[0].get_textpage().get_text_range()


def test_page_size_in_points_follows_the_pixels_and_dpi() -> None:
    tp = page(1, width=2480, height=3508)  # A4 at 300 dpi
    pdf = build([(tp, blank(tp))])
    assert pdf[0].get_size() == pytest.approx((595.2, 841.92), abs=0.01)


@pytest.mark.parametrize(
    "text",
    [
        "ſo ſchön iſt’s",  # long s, apostrophe
        "vnd ꝛc. Maß Grüße",  # r rotunda, umlaut, sharp s
        "Cafe\u0301 u\u0308ber",  # combining marks kept as written (not composed)
        "A & B < C > D \"E\" 'F'",  # XML's special characters
        "שלום עולם",  # right to left
        "שלום, עולם!",  # with punctuation
        "مرحبا بكم",
        "Brief aus עולם heute",  # a right-to-left word inside German
        "Ärger — „Zitat“ € ½ Œuvre",
    ],
)
def test_unusual_characters_come_back_exactly(text: str) -> None:
    tp = page(1, line(text, 100, 300, 1000))
    pdf = build([(tp, blank(tp))])
    assert_on_line(found_box(pdf, 1, text), tp.lines[0])
    assert text in pdf[0].get_textpage().get_text_range().split("\r\n")


def test_white_space_and_control_characters_are_normalised() -> None:
    assert layer_text("  zwei\t\tWörter\nund\u00a0 mehr\x07 ") == "zwei Wörter und mehr"
    assert layer_text("Mathe 𝔄 ok") == "Mathe ok"  # beyond U+FFFF: left out


def test_rotated_line_is_found_along_its_baseline() -> None:
    tilted = line("schief geschrieben", 200, 1200, 800, turn=30)
    steep = line("am Rand hinauf", 1000, 1500, 900, turn=90)
    tp = page(1, tilted, steep)
    pdf = build([(tp, blank(tp))])
    for tl in (tilted, steep):
        left, top, right, bottom = found_box(pdf, 1, tl.text)
        box = polygon_box(tl)
        centre = ((left + right) / 2, (top + bottom) / 2)
        assert box[0] - SLACK <= centre[0] <= box[2] + SLACK and box[1] - SLACK <= centre[1] <= box[3] + SLACK
        assert left >= box[0] - SLACK and top >= box[1] - SLACK and right <= box[2] + SLACK and bottom <= box[3] + SLACK


def test_line_without_baseline_takes_its_polygon_box() -> None:
    bare = TranscriptLine(baseline=(), polygon=((100, 500), (700, 500), (700, 560), (100, 560)), text="ohne Grundlinie")
    tp = page(1, bare)
    pdf = build([(tp, blank(tp))])
    assert_on_line(found_box(pdf, 1, bare.text), bare)


def test_empty_page_is_its_image_alone_and_lines_without_text_add_nothing() -> None:
    empty = page(1)
    silent = page(2, TranscriptLine(baseline=((10, 100), (500, 100)), polygon=(), text="  "))
    pdf = build([(empty, blank(empty)), (silent, blank(silent))])
    for index in (0, 1):
        objects = list(pdf[index].get_objects())
        assert [obj.type for obj in objects] == [pdfium_c.FPDF_PAGEOBJ_IMAGE]
        assert pdf[index].get_textpage().count_chars() == 0


def test_page_that_cannot_be_drawn_keeps_its_text_on_white() -> None:
    tp = page(1, line("nur Text", 100, 200, 500))
    pdf = build([(tp, PageArt(None, DPI))])
    assert [obj.type for obj in pdf[0].get_objects()] == [pdfium_c.FPDF_PAGEOBJ_TEXT]
    assert_on_line(found_box(pdf, 1, "nur Text"), tp.lines[0])


def test_text_is_invisible() -> None:
    tp = page(1, line("unsichtbar", 100, 200, 900, height=200))
    pdf = build([(tp, blank(tp))])
    pixels = pdf[0].render(scale=0.5).to_pil().convert("L")
    assert pixels.getextrema() == (255, 255)


def quadrants(size: tuple[int, int]) -> Image.Image:
    """An upright page whose orientation shows: red left half, blue top right, green bottom right."""
    image = Image.new("RGB", size, (220, 30, 30))
    image.paste((30, 30, 220), (size[0] // 2, 0, size[0], size[1] // 2))
    image.paste((30, 200, 30), (size[0] // 2, size[1] // 2, size[0], size[1]))
    return image


# How each EXIF orientation stores an upright image (the inverse of exif_transpose).
STORED = {
    1: [],
    2: [Image.Transpose.FLIP_LEFT_RIGHT],
    3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_90],
    7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_270],
}


def colour_at(image: Image.Image, x: float, y: float) -> str:
    r, g, b = image.getpixel((int(x * image.width), int(y * image.height)))[:3]
    return max((r, "red"), (g, "green"), (b, "blue"))[1]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_original_is_embedded_as_it_is_and_shown_upright(orientation: int) -> None:
    upright = quadrants((600, 400))
    stored = upright
    for step in STORED[orientation]:
        stored = stored.transpose(step)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = io.BytesIO()
    stored.save(data, "JPEG", quality=95, exif=exif)
    tp = page(1, line("aufrecht", 50, 150, 200, height=40), width=600, height=400)
    pdf = build([(tp, PageArt(JpegOriginal(io.BytesIO(data.getvalue()), orientation), DPI))])

    (image,) = [obj for obj in pdf[0].get_objects() if obj.type == pdfium_c.FPDF_PAGEOBJ_IMAGE]
    assert bytes(image.get_data(decode_simple=False)) == data.getvalue()
    shown = pdf[0].render(scale=1).to_pil()
    assert shown.size == (144, 96)
    assert [colour_at(shown, x, y) for x, y in ((0.25, 0.5), (0.75, 0.25), (0.75, 0.75))] == ["red", "blue", "green"]
    assert_on_line(found_box(pdf, 1, "aufrecht"), tp.lines[0])


@pytest.mark.parametrize("mode", ["RGB", "L", "1", "RGBA", "P"])
def test_decoded_page_of_any_mode_is_drawn(mode: str) -> None:
    tp = page(1, width=400, height=300)
    picture = quadrants((400, 300)).convert(mode)
    pdf = build([(tp, PageArt(picture, DPI))])
    shown = pdf[0].render(scale=2).to_pil()
    if mode in ("RGB", "RGBA", "P"):
        assert [colour_at(shown, x, y) for x, y in ((0.25, 0.5), (0.75, 0.25), (0.75, 0.75))] == [
            "red",
            "blue",
            "green",
        ]
    else:
        assert shown.convert("L").getextrema()[0] < 200  # grey/black pixels, drawn


def test_image_of_another_size_covers_the_page() -> None:
    tp = page(1, width=1200, height=800)
    pdf = build([(tp, PageArt(quadrants((600, 400)), DPI))])
    (image,) = list(pdf[0].get_objects())
    assert image.get_bounds() == pytest.approx((0, 0, 288, 192), abs=0.01)


# --- any geometry -----------------------------------------------------------------------------

coordinate = st.integers(min_value=-50, max_value=1250)
points = st.lists(st.tuples(coordinate, coordinate), max_size=6).map(tuple)
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyzäöüßſꝛ ÄÖÜ&<>\"'.,-", min_size=0, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(points, points, words), max_size=8))
def test_any_line_geometry_makes_a_pdf_whose_text_is_extractable(raw_lines: list) -> None:
    lines = tuple(TranscriptLine(baseline=b, polygon=p, text=t) for b, p, t in raw_lines)
    tp = page(1, *lines, width=1200, height=1200)
    pdf = build([(tp, PageArt(None, DPI))])
    extracted = Counter(pdf[0].get_textpage().get_text_range())
    wanted: Counter[str] = Counter()
    for tl in lines:
        drawable = len({*tl.baseline}) >= 2 or (
            len({x for x, _ in tl.polygon}) > 1 and len({y for _, y in tl.polygon}) > 1
        )
        if drawable:
            wanted.update(layer_text(tl.text))
    for ignored in (" ", "\r", "\n"):
        extracted.pop(ignored, None)
        wanted.pop(ignored, None)
    # Every character comes back; never more of one than was written (pdfium drops a character
    # drawn twice at the same place, as in fake bold: two identical lines on top of each other).
    assert set(extracted) == set(wanted)
    assert all(extracted[char] <= wanted[char] for char in extracted)


# --- memory -----------------------------------------------------------------------------------

PEAK_SCRIPT = textwrap.dedent(
    """
    import io, random, resource, sys, tempfile
    from PIL import Image
    from backend.transcripts.model import TranscriptDocument, TranscriptLine, TranscriptPage
    from backend.transcripts.pdf import PageArt, write_searchable_pdf

    count = int(sys.argv[1])
    rng = random.Random(7)
    line = TranscriptLine(baseline=((100, 200), (1100, 200)),
                          polygon=((100, 150), (1100, 150), (1100, 215), (100, 215)),
                          text="Liebe Mutter, wir sind gut angekommen")
    pages = tuple(TranscriptPage(number=n, width=1600, height=2000, image_name="", lines=(line,) * 20)
                  for n in range(1, count + 1))

    def art():
        for tp in pages:
            # Noise: a JPEG that does not shrink, about 3 MB a page.
            image = Image.frombytes("RGB", (1600, 2000), rng.randbytes(1600 * 2000 * 3))
            yield tp, PageArt(image, 300)
            image.close()

    with tempfile.TemporaryFile() as out:
        write_searchable_pdf(TranscriptDocument(title="t", pages=pages), art(), out)
        size = out.tell()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, size)
    """
)


def peak_and_size(pages: int) -> tuple[int, int]:
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(pages)], capture_output=True, text=True, check=True, timeout=300
    )
    peak, size = done.stdout.split()
    return int(peak), int(size)


@pytest.mark.slow
def test_memory_stays_flat_with_the_page_count() -> None:
    few_peak, few_size = peak_and_size(5)
    many_peak, many_size = peak_and_size(50)
    assert many_size > 9 * few_size  # the images really are in the PDF
    # 45 more pages of ~3 MB each: were they held, the peak would grow by well over 100 MB.
    assert many_peak - few_peak < 40 * 2**20, (few_peak, many_peak)
