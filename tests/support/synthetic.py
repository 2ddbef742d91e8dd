"""Generated test documents: text rendered onto pages and line strips with PIL.

Nothing is downloaded; the same seed gives the same pages, so tests and benchmarks
are repeatable.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

_FONTS = Path("/usr/share/fonts/truetype/dejavu")
_DEJAVU = _FONTS / "DejaVuSans.ttf"
# Two "hands" for the learning-loop test and benchmark: the one the tests' models are trained
# on (every page and line is drawn in it unless a test asks otherwise), and a face they never
# saw (slanted, serifed).
HAND_A = _DEJAVU
HAND_B = _FONTS / "DejaVuSerif-BoldItalic.ttf"

WORDS = (
    "Liebe Mutter lieber Vater ich schreibe euch aus dem Feld es geht mir gut "
    "das Wetter ist kalt und wir warten auf Post von zu Hause Gruss an alle "
    "Schwester Bruder Onkel Tante Haus Garten Brief Karte Sonntag Kirche Dorf "
    "Stadt Arbeit Ernte Winter Sommer Fruehling Herbst morgen heute gestern"
).split()


@cache
def font(size: int, face: Path = _DEJAVU) -> ImageFont.FreeTypeFont:
    if face.exists():
        return ImageFont.truetype(str(face), size)
    if face != _DEJAVU:
        # Another hand must really be another font: a fallback would draw the default hand.
        raise FileNotFoundError(f"font {face} is not installed")
    return ImageFont.load_default(size=size)


def sentence(rng: random.Random, words: int = 6) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


@dataclass(frozen=True)
class RenderedLine:
    text: str
    baseline: list[tuple[int, int]]
    polygon: list[tuple[int, int]]


@dataclass(frozen=True)
class RenderedPage:
    image: Image.Image
    lines: list[RenderedLine]


def render_page(
    texts: Sequence[str],
    *,
    width: int = 1200,
    height: int = 900,
    font_size: int = 40,
    margin: int = 80,
    line_gap: float = 2.0,
    font_file: Path = _DEJAVU,
) -> RenderedPage:
    """A white page with one line of black text per entry, and where each line lies."""
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    face = font(font_size, font_file)
    ascent, descent = face.getmetrics()
    y = margin
    lines = []
    for text in texts:
        draw.text((margin, y), text, font=face, fill="black")
        x0, _, x1, _ = draw.textbbox((margin, y), text, font=face)
        base_y = y + ascent
        lines.append(
            RenderedLine(
                text=text,
                baseline=[(x0, base_y), (x1, base_y)],
                polygon=[(x0, y), (x1, y), (x1, base_y + descent), (x0, base_y + descent)],
            )
        )
        y += int(font_size * line_gap)
        if y + font_size > height - margin:
            raise ValueError("too many lines for this page size")
    return RenderedPage(image=image, lines=lines)


def render_line(text: str, *, font_size: int = 40, pad: int = 8, font_file: Path = _DEJAVU) -> Image.Image:
    """A line strip cropped around its text, as kraken cuts a bbox line out of a page."""
    face = font(font_size, font_file)
    ascent, descent = face.getmetrics()
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    x0, _, x1, _ = probe.textbbox((0, 0), text, font=face)
    image = Image.new("L", (x1 - x0 + 2 * pad, ascent + descent + 2 * pad), 255)
    ImageDraw.Draw(image).text((pad - x0, pad), text, font=face, fill=0)
    return image


def page_texts(seed: int, lines: int, words: int = 6) -> list[str]:
    rng = random.Random(seed)
    return [sentence(rng, words) for _ in range(lines)]


def to_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def to_pdf(pages: Sequence[Image.Image], dpi: int = 150) -> bytes:
    """A multi-page PDF whose pages are the given images at the given resolution."""
    buffer = io.BytesIO()
    first, *rest = [p.convert("RGB") for p in pages]
    first.save(buffer, format="PDF", save_all=True, append_images=rest, resolution=dpi)
    return buffer.getvalue()


def to_tiff(pages: Sequence[Image.Image]) -> bytes:
    buffer = io.BytesIO()
    first, *rest = pages
    first.save(buffer, format="TIFF", save_all=True, append_images=list(rest), compression="tiff_lzw")
    return buffer.getvalue()


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions each cost 1)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]
