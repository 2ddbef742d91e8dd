"""Round trips: a document exported as PAGE or ALTO and imported again has the same lines, text,
baselines, outlines and order, its writer and date, and the OCR's reading of corrected lines."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest
from PIL import Image

from tests.backend.conftest import Actors
from tests.backend.ground_truth import correct, lines_of, ocr_line, store_lines
from tests.backend.transcript_files import ODD_WORDS, gen_page


def upload_pages(actors: Actors, seed: int) -> int:
    """A two-page TIFF document with known lines (unusual characters, an empty page 3), one corrected."""
    pages = [gen_page(seed, "a.png", lines=4), gen_page(seed + 1, "b.png", lines=3), gen_page(seed + 2, "c.png", 0)]
    frames = [Image.new("RGB", (p.width, p.height), (250, 250, 240 - n)) for n, p in enumerate(pages)]
    out = io.BytesIO()
    frames[0].save(out, "TIFF", save_all=True, append_images=frames[1:])
    response = actors.client.post(
        "/api/documents",
        headers=actors.archivist,
        files={"file": ("brief.tif", out.getvalue(), "image/tiff")},
        data={"title": "Brief aus Königsberg", "writer": "Anna Müller", "date": "1917-03"},
    )
    assert response.status_code == 201, response.text
    document_id: int = response.json()["id"]
    for number, page in enumerate(pages, start=1):
        if page.lines:
            lines = [ocr_line(i, line.text, line.baseline, line.polygon) for i, line in enumerate(page.lines)]
            store_lines(actors.client, document_id, number, lines)
    correct(actors.client, actors.archivist, document_id, 1, " ".join(ODD_WORDS), page=2)
    return document_id


def exported(actors: Actors, document_id: int, fmt: str) -> bytes:
    response = actors.client.get(
        f"/api/documents/{document_id}/export", params={"format": fmt}, headers=actors.archivist
    )
    assert response.status_code == 200, response.text
    assert zipfile.is_zipfile(io.BytesIO(response.content))
    return response.content


def shape(lines: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (line["page"], line["orderIndex"], line["currentText"], line["baseline"], line["polygon"]) for line in lines
    ]


@pytest.mark.parametrize("fmt", ["page", "alto"])
def test_an_export_imported_again_has_the_same_lines(actors: Actors, fmt: str) -> None:
    original = upload_pages(actors, 300 if fmt == "page" else 310)
    response = actors.client.post(
        "/api/imports",
        headers=actors.archivist,
        files={"file": ("export.zip", exported(actors, original, fmt), "application/zip")},
    )
    assert response.status_code == 201, response.text
    [document] = response.json()["documents"]
    assert document["writer"]["name"] == "Anna Müller"
    assert document["date"] == "1917-03"
    assert document["pageCount"] == 3
    assert document["title"] == "Brief aus Königsberg"
    before = lines_of(actors.client, actors.archivist, original)
    after = lines_of(actors.client, actors.archivist, document["id"])
    assert shape(after) == shape(before)
    # The corrected line keeps the OCR's reading it replaced; the others' OCR text is their text.
    assert [line["ocrText"] for line in after] == [line["ocrText"] for line in before]
    assert all(line["text"] == line["currentText"] for line in after)
    pages = actors.client.get(f"/api/documents/{document['id']}/pages", headers=actors.archivist).json()
    assert all(page["reviewedAt"] is not None for page in pages)


def test_escriptorium_reads_the_exports_text_and_shapes(actors: Actors) -> None:
    """What eScriptorium's importers (apps/imports/parsers.py) take from our files: a PAGE line's
    text is every ``TextEquiv/Unicode`` of it joined by spaces (a second TextEquiv with the OCR's
    reading doubled each corrected line there), and ALTO's BASELINE and POINTS are numbers split
    at spaces (``x,y`` pairs were reported invalid and the lines came in without either)."""
    from lxml import etree

    original = upload_pages(actors, 320)
    current = [line["currentText"] for line in lines_of(actors.client, actors.archivist, original)]
    page_ns = "{http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15}"
    with zipfile.ZipFile(io.BytesIO(exported(actors, original, "page"))) as archive:
        texts = [
            " ".join(u.text or "" for u in line.iterfind(f"{page_ns}TextEquiv/{page_ns}Unicode"))
            for name in sorted(n for n in archive.namelist() if n.endswith(".xml"))
            for line in etree.fromstring(archive.read(name)).iter(f"{page_ns}TextLine")
        ]
    assert texts == current
    alto_ns = "{http://www.loc.gov/standards/alto/ns-v4#}"
    with zipfile.ZipFile(io.BytesIO(exported(actors, original, "alto"))) as archive:
        shapes = [
            (line.get("BASELINE"), line.find(f"{alto_ns}Shape/{alto_ns}Polygon").get("POINTS"))
            for name in sorted(n for n in archive.namelist() if n.endswith(".xml"))
            for line in etree.fromstring(archive.read(name)).iter(f"{alto_ns}TextLine")
        ]
    assert len(shapes) == len(current)
    for baseline, polygon in shapes:
        for points in (baseline, polygon):
            numbers = tuple(map(float, points.strip().split(" ")))
            assert len(numbers) >= 4 and len(numbers) % 2 == 0
