"""Generated training data: pages with PAGE XML or ALTO, line strips with ``.gt.txt``, and ZIPs of them.

Built on :mod:`tests.support.synthetic`; the same seed gives the same data, so the training
tests and ``bench/bench_training.py`` are repeatable.
"""

from __future__ import annotations

import io
import random
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from tests.support.synthetic import RenderedPage, page_texts, render_line, render_page, sentence, to_png

PAGE_NS = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
ALTO_NS = "http://www.loc.gov/standards/alto/ns-v4#"


def _points(points: Iterable[tuple[int, int]], sep: str = ",") -> str:
    return " ".join(f"{x}{sep}{y}" for x, y in points)


def page_xml(page: RenderedPage, image_name: str) -> str:
    width, height = page.image.size
    lines = []
    for i, line in enumerate(page.lines):
        lines.append(
            f'<TextLine id="l{i}"><Coords points="{_points(line.polygon)}"/>'
            f'<Baseline points="{_points(line.baseline)}"/>'
            f"<TextEquiv><Unicode>{escape(line.text)}</Unicode></TextEquiv></TextLine>"
        )
    region = f"0,0 {width - 1},0 {width - 1},{height - 1} 0,{height - 1}"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<PcGts xmlns="{PAGE_NS}"><Metadata><Creator>tests</Creator>'
        "<Created>2024-01-01T00:00:00</Created><LastChange>2024-01-01T00:00:00</LastChange></Metadata>"
        f'<Page imageFilename={quoteattr(image_name)} imageWidth="{width}" imageHeight="{height}">'
        f'<TextRegion id="r0"><Coords points="{region}"/>{"".join(lines)}</TextRegion>'
        "</Page></PcGts>\n"
    )


def alto_xml(page: RenderedPage, image_name: str) -> str:
    width, height = page.image.size
    lines = []
    for i, line in enumerate(page.lines):
        xs = [p[0] for p in line.polygon]
        ys = [p[1] for p in line.polygon]
        box = f'HPOS="{min(xs)}" VPOS="{min(ys)}" WIDTH="{max(xs) - min(xs)}" HEIGHT="{max(ys) - min(ys)}"'
        lines.append(
            f'<TextLine ID="l{i}" BASELINE="{_points(line.baseline, " ")}" {box}>'
            f'<Shape><Polygon POINTS="{_points(line.polygon, " ")}"/></Shape>'
            f"<String CONTENT={quoteattr(line.text)} {box}/></TextLine>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<alto xmlns="{ALTO_NS}"><Description><MeasurementUnit>pixel</MeasurementUnit>'
        f"<sourceImageInformation><fileName>{escape(image_name)}</fileName></sourceImageInformation></Description>"
        f'<Layout><Page ID="p0" WIDTH="{width}" HEIGHT="{height}" PHYSICAL_IMG_NR="1">'
        f'<PrintSpace HPOS="0" VPOS="0" WIDTH="{width}" HEIGHT="{height}">'
        f'<TextBlock ID="b0" HPOS="0" VPOS="0" WIDTH="{width}" HEIGHT="{height}">{"".join(lines)}</TextBlock>'
        "</PrintSpace></Page></Layout></alto>\n"
    )


def page_set(
    pages: int,
    *,
    seed: int = 1,
    lines_per_page: int = 4,
    width: int = 900,
    height: int = 600,
    font_size: int = 36,
    fmt: str = "page",
) -> dict[str, bytes]:
    """ZIP members for ``pages`` rendered pages with PAGE XML (``fmt="page"``) or ALTO (``"alto"``)."""
    files: dict[str, bytes] = {}
    for n in range(pages):
        texts = page_texts(seed * 1000 + n, lines_per_page, words=4)
        page = render_page(texts, width=width, height=height, font_size=font_size, margin=40, line_gap=2.2)
        image_name = f"page{n:03d}.png"
        files[f"pages/{image_name}"] = to_png(page.image)
        xml = page_xml(page, image_name) if fmt == "page" else alto_xml(page, image_name)
        files[f"pages/page{n:03d}.xml"] = xml.encode("utf-8")
    return files


def line_set(count: int, *, seed: int = 3, extra_texts: Sequence[str] = ()) -> dict[str, bytes]:
    """ZIP members for line strips with ``.gt.txt`` files; ``extra_texts`` are added as lines too."""
    rng = random.Random(seed)
    texts = [sentence(rng, rng.randint(2, 4)) for _ in range(count)] + list(extra_texts)
    files: dict[str, bytes] = {}
    for i, text in enumerate(texts):
        image = render_line(text, font_size=rng.choice([32, 36, 40]))
        files[f"lines/l{i:04d}.png"] = to_png(image)
        files[f"lines/l{i:04d}.gt.txt"] = text.encode("utf-8")
    return files


def make_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def write_files(directory: Path, files: dict[str, bytes]) -> list[Path]:
    written = []
    for name, data in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written.append(path)
    return written
