"""Exports through the API: plain text, PAGE XML and ALTO ZIPs of one document or a selection.

The ZIP layout is the one Transkribus reads (images at the folder's root, ``page/`` or
``alto/`` with one XML per page named after its image); every XML is checked against its
schema, every image against the page size its lines' coordinates are in.
"""

from __future__ import annotations

import io
import random
import re
import tempfile
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from PIL import Image

from backend.exports import drawing
from backend.exports.schemas import ExportFormat
from backend.users.models import Role
from tests.backend.conftest import BOTH_STORES, Actors, AppFactory, add_user, bearer, services_of
from tests.backend.documents import closing_each_page_image, make_document
from tests.backend.ground_truth import correct, ocr_line, store_lines, upload
from tests.backend.test_pages import BLUE, RED, close_to, exif_jpeg
from tests.support.synthetic import to_tiff

SCHEMAS = Path(__file__).parents[1] / "schemas"
PAGE = "{http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15}"
ALTO = "{http://www.loc.gov/standards/alto/ns-v4#}"
# Archivists' characters: long s, r rotunda, a combining acute, Hebrew, and XML's own specials.
UNUSUAL = "ſchöne Grüße ꝛ e\u0301 שלום & <Mutter>"


@pytest.fixture(scope="module")
def schemas() -> dict[str, etree.XMLSchema]:
    return {
        "page": etree.XMLSchema(etree.parse(SCHEMAS / "pagecontent.xsd")),
        "alto": etree.XMLSchema(etree.parse(SCHEMAS / "alto-4-3.xsd")),
    }


def _line(index: int, text: str, y: int = 20) -> dict[str, Any]:
    return ocr_line(index, text, [[2, y], [30, y]], [[2, y - 12], [30, y - 12], [30, y + 3], [2, y + 3]])


def _export(actors: Actors, document_id: int, fmt: str, headers: dict[str, str] | None = None) -> Any:
    return actors.client.get(
        f"/api/documents/{document_id}/export", params={"format": fmt}, headers=headers or actors.archivist
    )


def _zip(response: Any) -> zipfile.ZipFile:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.testzip() is None
    return archive


def _pages(actors: Actors, document_id: int) -> list[tuple[int, int]]:
    response = actors.client.get(f"/api/documents/{document_id}/pages", headers=actors.archivist)
    return [(page["width"], page["height"]) for page in response.json()]


def _letter(actors: Actors) -> int:
    """Three pages (TIFF): two lines, none, one line; the first line corrected by a person."""
    frames = [Image.new("RGB", (60 + n, 40), "white") for n in range(3)]
    document_id = upload(actors.client, actors.archivist, to_tiff(frames), "Brief an Müller", writer="Anna Müller")
    store_lines(actors.client, document_id, 1, [_line(0, "Liebe Mutcr"), _line(1, UNUSUAL, 35)])
    store_lines(actors.client, document_id, 3, [_line(0, "Dein Sohn")])
    correct(actors.client, actors.archivist, document_id, 0, "Liebe Mutter")
    return document_id


def test_plain_text_is_every_line_in_reading_order_with_a_form_feed_between_pages(actors: Actors) -> None:
    document_id = _letter(actors)
    response = _export(actors, document_id, "txt")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["content-disposition"] == (
        "attachment; filename=\"Brief_an_Mueller.txt\"; filename*=UTF-8''Brief%20an%20M%C3%BCller.txt"
    )
    assert response.text == f"Liebe Mutter\n{UNUSUAL}\n\f\fDein Sohn\n"


@pytest.mark.parametrize(("fmt", "folder"), [("page", "page"), ("alto", "alto")])
def test_a_zip_holds_each_page_image_and_its_valid_xml_in_transkribus_layout(
    actors: Actors, schemas: dict[str, etree.XMLSchema], fmt: str, folder: str
) -> None:
    document_id = _letter(actors)
    archive = _zip(_export(actors, document_id, fmt))
    assert archive.namelist() == [
        name for n in (1, 2, 3) for name in (f"Brief_an_Mueller/{n:04d}.png", f"Brief_an_Mueller/{folder}/{n:04d}.xml")
    ]
    # Streamed entries carry their sizes after the data; Java's ZipInputStream reads that only
    # for deflated entries.
    assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    sizes = _pages(actors, document_id)
    for n, size in enumerate(sizes, start=1):
        with Image.open(io.BytesIO(archive.read(f"Brief_an_Mueller/{n:04d}.png"))) as image:
            assert image.size == size
        root = etree.fromstring(archive.read(f"Brief_an_Mueller/{folder}/{n:04d}.xml"))
        schemas[fmt].assertValid(root)
        if fmt == "page":
            element = root.find(f"{PAGE}Page")
            assert (element.get("imageFilename"), element.get("imageWidth"), element.get("imageHeight")) == (
                f"{n:04d}.png",
                str(size[0]),
                str(size[1]),
            )
        else:
            assert root.findtext(f".//{ALTO}fileName") == f"{n:04d}.png"
            element = root.find(f".//{ALTO}Page")
            assert (element.get("WIDTH"), element.get("HEIGHT")) == tuple(map(str, size))


def test_page_xml_says_the_current_text_the_ocr_reading_the_writer_and_the_date(actors: Actors) -> None:
    client = actors.client
    response = client.post(
        "/api/documents",
        headers=actors.archivist,
        files={"file": ("scan.png", make_document("png", 5), "application/octet-stream")},
        data={"title": "Brief", "writer": "Anna Müller", "date": "1917-12"},
    )
    assert response.status_code == 201, response.text
    document_id = response.json()["id"]
    store_lines(client, document_id, 1, [_line(0, "Weihnaehten"), _line(1, "Mutter", 28)])
    correct(client, actors.archivist, document_id, 0, "Weihnachten")
    archive = _zip(_export(actors, document_id, "page"))
    root = etree.fromstring(archive.read("Brief/page/0001.xml"))
    lines = [
        [(e.get("index"), e.findtext(f"{PAGE}Unicode")) for e in line.iter(f"{PAGE}TextEquiv")]
        for line in root.iter(f"{PAGE}TextLine")
    ]
    assert lines == [[("0", "Weihnachten")], [("0", "Mutter")]]
    kept = [
        [(a.get("name"), a.get("value")) for a in line.iter(f"{PAGE}UserAttribute")]
        for line in root.iter(f"{PAGE}TextLine")
    ]
    assert kept[0][0] == ("ocrText", "Weihnaehten") and kept[1] == []
    baselines = [line.find(f"{PAGE}Baseline").get("points") for line in root.iter(f"{PAGE}TextLine")]
    assert baselines == ["2,20 30,20", "2,28 30,28"]
    items = {item.get("name"): (item.get("type"), item.get("value")) for item in root.iter(f"{PAGE}MetadataItem")}
    assert items == {"writer": ("author", "Anna Müller"), "date": ("other", "1917-12")}


def test_the_writer_given_at_upload_is_in_both_formats(actors: Actors) -> None:
    document_id = _letter(actors)
    page_root = etree.fromstring(_zip(_export(actors, document_id, "page")).read("Brief_an_Mueller/page/0001.xml"))
    assert [(i.get("type"), i.get("value")) for i in page_root.iter(f"{PAGE}MetadataItem")] == [
        ("author", "Anna Müller")
    ]
    alto_root = etree.fromstring(_zip(_export(actors, document_id, "alto")).read("Brief_an_Mueller/alto/0001.xml"))
    tags = [(t.get("ID"), t.get("LABEL")) for t in alto_root.iter(f"{ALTO}OtherTag")]
    assert tags == [("title", "Brief an Müller"), ("writer", "Anna Müller")]
    strings = [s.get("CONTENT") for s in alto_root.iter(f"{ALTO}String")]
    assert strings == ["Liebe Mutter", UNUSUAL]
    assert alto_root.findtext(f".//{ALTO}ALTERNATIVE") == "Liebe Mutcr"


@BOTH_STORES
def test_a_jpeg_that_is_the_page_goes_out_as_its_own_bytes(actors: Actors) -> None:
    original = exif_jpeg(1)
    document_id = upload(actors.client, actors.archivist, original, "Foto")
    archive = _zip(_export(actors, document_id, "page"))
    assert archive.read("Foto/0001.jpg") == original
    assert etree.fromstring(archive.read("Foto/page/0001.xml")).find(f"{PAGE}Page").get("imageFilename") == "0001.jpg"


def test_a_turned_photo_goes_out_upright_as_png_at_the_page_size(actors: Actors) -> None:
    # EXIF orientation 6: stored 120 x 80 with red on top; upright it is 80 x 120 with red on the right.
    document_id = upload(actors.client, actors.archivist, exif_jpeg(6), "Gedreht")
    store_lines(actors.client, document_id, 1, [_line(0, "oben rechts")])
    archive = _zip(_export(actors, document_id, "alto"))
    assert archive.namelist() == ["Gedreht/0001.png", "Gedreht/alto/0001.xml"]
    with Image.open(io.BytesIO(archive.read("Gedreht/0001.png"))) as image:
        assert image.size == (80, 120) == _pages(actors, document_id)[0]
        rgb = image.convert("RGB")
        assert close_to(rgb.getpixel((70, 60)), RED) and close_to(rgb.getpixel((10, 60)), BLUE)


def test_pdf_pages_are_drawn_at_the_size_their_lines_are_in(
    actors: Actors, schemas: dict[str, etree.XMLSchema]
) -> None:
    document_id = upload(actors.client, actors.archivist, make_document("pdf", 11, pages=2), "Akte")
    store_lines(actors.client, document_id, 2, [_line(0, "Seite zwei")])
    archive = _zip(_export(actors, document_id, "page"))
    sizes = _pages(actors, document_id)
    for n, size in enumerate(sizes, start=1):
        with Image.open(io.BytesIO(archive.read(f"Akte/{n:04d}.png"))) as image:
            assert image.size == size
        schemas["page"].assertValid(etree.fromstring(archive.read(f"Akte/page/{n:04d}.xml")))


def test_a_selection_is_one_zip_with_a_folder_per_document(actors: Actors) -> None:
    first = upload(actors.client, actors.archivist, make_document("png", 21), "Brief")
    second = upload(actors.client, actors.archivist, make_document("png", 22), "Brief")
    store_lines(actors.client, second, 1, [_line(0, "zweiter Brief")])
    response = actors.client.get(
        "/api/exports", params={"ids": [second, first, second], "format": "alto"}, headers=actors.archivist
    )
    archive = _zip(response)
    assert re.fullmatch(
        r'attachment; filename="export-\d{4}-\d{2}-\d{2}\.zip".*', response.headers["content-disposition"]
    )
    assert archive.namelist() == [
        f"{second}_Brief/0001.png",
        f"{second}_Brief/alto/0001.xml",
        f"{first}_Brief/0001.png",
        f"{first}_Brief/alto/0001.xml",
    ]


def test_a_text_selection_is_one_text_file_per_document(actors: Actors) -> None:
    first = _letter(actors)
    second = upload(actors.client, actors.archivist, make_document("png", 23), "Leer")
    archive = _zip(
        actors.client.get("/api/exports", params={"ids": [first, second], "format": "txt"}, headers=actors.archivist)
    )
    assert archive.namelist() == [f"{first}_Brief_an_Mueller.txt", f"{second}_Leer.txt"]
    assert archive.read(f"{first}_Brief_an_Mueller.txt").decode() == f"Liebe Mutter\n{UNUSUAL}\n\f\fDein Sohn\n"
    assert archive.read(f"{second}_Leer.txt") == b""


def test_unknown_and_trashed_documents_are_not_found_and_named(actors: Actors) -> None:
    kept = upload(actors.client, actors.archivist, make_document("png", 31), "Bleibt")
    trashed = upload(actors.client, actors.archivist, make_document("png", 32), "Weg")
    assert actors.client.delete(f"/api/documents/{trashed}", headers=actors.archivist).status_code == 204
    for headers in (actors.archivist, actors.admin):
        response = _export(actors, trashed, "page", headers)
        assert (response.status_code, response.json()["code"]) == (404, "DOCUMENT_NOT_FOUND")
        response = actors.client.get(
            "/api/exports", params={"ids": [kept, trashed, 99999], "format": "txt"}, headers=headers
        )
        assert (response.status_code, response.json()["code"]) == (404, "DOCUMENT_NOT_FOUND")
        assert response.json()["details"] == {"documentIds": [trashed, 99999]}
        assert str(trashed) in response.json()["message"] and "99999" in response.json()["message"]


def test_a_selection_larger_than_the_limit_is_refused(app_factory: AppFactory) -> None:
    client = app_factory(export_max_documents=2)
    add_user(client, "erika", Role.ARCHIVIST)
    headers = bearer(client, "erika")
    response = client.get("/api/exports", params={"ids": [1, 2, 3], "format": "txt"}, headers=headers)
    assert (response.status_code, response.json()["code"]) == (422, "EXPORT_SELECTION_TOO_LARGE")
    assert response.json()["details"] == {"max": 2, "chosen": 3}
    # The same id twice counts once.
    response = client.get("/api/exports", params={"ids": [1, 1, 2], "format": "txt"}, headers=headers)
    assert response.json()["code"] == "DOCUMENT_NOT_FOUND"


@pytest.mark.parametrize(
    "params",
    [
        {"format": "docx"},
        {},
        {"format": "txt", "ids": []},
        {"format": "txt", "ids": ["x"]},
        {"format": "txt", "ids": [0]},
    ],
)
def test_a_malformed_export_request_is_refused(actors: Actors, params: dict[str, Any]) -> None:
    response = actors.client.get("/api/exports", params=params, headers=actors.archivist)
    assert (response.status_code, response.json()["code"]) == (422, "INVALID_REQUEST")
    if "ids" not in params:
        response = actors.client.get("/api/documents/1/export", params=params, headers=actors.archivist)
        assert (response.status_code, response.json()["code"]) == (422, "INVALID_REQUEST")


def test_a_many_page_export_streams_one_page_at_a_time(actors: Actors, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python's allocations stay about one page's worth however many pages go out, the first bytes
    leave before the second page is drawn, and each page image is closed before the next is drawn
    (Pillow's pixels live outside tracemalloc's view)."""
    client = actors.client
    frames = [Image.frombytes("RGB", (400, 400), random.Random(n).randbytes(400 * 400 * 3)) for n in range(6)]
    document_id = upload(client, actors.archivist, to_tiff(frames), "Rauschen")
    for number in range(1, 7):
        store_lines(client, document_id, number, [_line(0, f"Seite {number}")])
    drawn = closing_each_page_image(monkeypatch, drawing)
    services = services_of(client)
    with services.db.sessions() as session:
        download = services.exports.document(session, document_id, ExportFormat.PAGE, services.clock())
    drawn_at_chunk: list[int] = []
    with tempfile.TemporaryFile() as body:
        tracemalloc.start()
        try:
            for chunk in download.body:
                drawn_at_chunk.append(len(drawn))
                body.write(chunk)
                del chunk
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        with zipfile.ZipFile(body) as archive:
            sizes = [info.file_size for info in archive.infolist() if info.filename.endswith(".png")]
    assert len(drawn) == 6 and drawn_at_chunk[0] == 1
    assert min(sizes) > 400_000
    assert peak < 2 * max(sizes), (peak, sizes)
    assert peak < sum(sizes) / 3
