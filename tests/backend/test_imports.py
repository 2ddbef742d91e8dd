"""POST /api/imports: Transkribus PAGE and eScriptorium/kraken ALTO ZIPs become reviewed documents."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from backend.documents.models import Document, Line, Page
from backend.documents.render import ocr_sizes
from backend.training.dataset import eligible_pages
from backend.training.models import TrainingKind
from tests.backend.conftest import Actors, services_of
from tests.backend.transcript_files import (
    PAGE_2013,
    PAGE_2019,
    GenPage,
    escriptorium_alto,
    gen_page,
    image_bytes,
    kraken_alto,
    transkribus_metadata,
    transkribus_mets,
    transkribus_midnight_ms,
    transkribus_page,
    transkribus_zip,
    zip_of,
)


def post_import(
    client: TestClient, headers: dict[str, str], data: bytes, name: str = "export.zip", **fields: str
) -> Any:
    return client.post("/api/imports", headers=headers, files={"file": (name, data, "application/zip")}, data=fields)


def imported(client: TestClient, headers: dict[str, str], data: bytes, **fields: str) -> list[dict[str, Any]]:
    response = post_import(client, headers, data, **fields)
    assert response.status_code == 201, response.text
    documents: list[dict[str, Any]] = response.json()["documents"]
    return documents


def lines_of(client: TestClient, headers: dict[str, str], document_id: int) -> list[dict[str, Any]]:
    response = client.get(f"/api/documents/{document_id}/lines", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json())


def assert_lines(lines: list[dict[str, Any]], pages: list[GenPage], *, baselines: bool = True) -> None:
    expected = [(n, i, line) for n, page in enumerate(pages, start=1) for i, line in enumerate(page.lines)]
    assert [(line["page"], line["orderIndex"]) for line in lines] == [(n, i) for n, i, _ in expected]
    for got, (_, _, line) in zip(lines, expected, strict=True):
        assert got["text"] == line.text
        assert got["ocrText"] == line.text
        assert got["correctedBy"] is not None
        assert got["polygon"] == [list(p) for p in line.polygon]
        if baselines:
            assert got["baseline"] == [list(p) for p in line.baseline]


@pytest.mark.parametrize("namespace", [PAGE_2013, PAGE_2019])
def test_transkribus_page_zip_is_imported_in_reading_order_as_reviewed_pages(actors: Actors, namespace: str) -> None:
    pages = [gen_page(seed, f"{n:04d}.png") for n, seed in enumerate((11, 12, 13), start=1)]
    [document] = imported(actors.client, actors.archivist, transkribus_zip(pages, namespace=namespace))
    assert document["title"] == "Brief an Anna"
    assert document["status"] == "DONE"
    assert document["pageCount"] == 3
    assert document["mediaType"] == "image/tiff"
    assert_lines(lines_of(actors.client, actors.archivist, document["id"]), pages)
    services = services_of(actors.client)
    with services.db.sessions() as session:
        rows = session.scalars(select(Page).where(Page.document_id == document["id"]).order_by(Page.number)).all()
        assert [(p.width, p.height) for p in rows] == [(600, 400)] * 3
        assert all(p.reviewed_at is not None and p.reviewed_by is not None for p in rows)
        stored = services.documents.storage.open(session.get(Document, document["id"]).storage_key)  # type: ignore[union-attr]
    with stored, Image.open(stored) as tiff:
        assert tiff.n_frames == 3
        assert tiff.size == (600, 400)
        # The size the backend (and the OCR service) measure a frame at is the page's recorded size.
        assert ocr_sizes(stored, "image/tiff", services.pages.limits) == [(600, 400)] * 3


def test_pages_follow_the_natural_order_of_their_file_names(actors: Actors) -> None:
    pages = [gen_page(seed, f"scan{n}.png", lines=1) for n, seed in ((10, 21), (2, 22), (1, 23))]
    files = {}
    for page in pages:
        files[page.image_name] = image_bytes(page)
        files[f"page/{page.image_name[:-4]}.xml"] = transkribus_page(page)
    [document] = imported(actors.client, actors.archivist, zip_of(files), title="Sammlung")
    assert document["title"] == "Sammlung"
    lines = lines_of(actors.client, actors.archivist, document["id"])
    assert [line["text"] for line in lines] == [
        p.lines[0].text for p in sorted(pages, key=lambda p: len(p.image_name) * 100 + int(p.image_name[4:-4]))
    ]


@pytest.mark.parametrize("version", [2, 3, 4])
def test_kraken_alto_zip_is_imported(actors: Actors, version: int) -> None:
    pages = [gen_page(30 + version * 3 + n, f"seite_{n}.png") for n in range(2)]
    files = {}
    for page in pages:
        files[page.image_name] = image_bytes(page)
        files[page.image_name.replace(".png", ".xml")] = kraken_alto(page, version)
    [document] = imported(actors.client, actors.archivist, zip_of(files), writer="Anna Müller", date="1917-03")
    assert document["writer"]["name"] == "Anna Müller"
    assert document["date"] == "1917-03"
    lines = lines_of(actors.client, actors.archivist, document["id"])
    assert [line["text"] for line in lines] == [line.text for page in pages for line in page.lines]
    for got, line in zip(lines, [line for page in pages for line in page.lines], strict=True):
        if version == 4:
            assert got["baseline"] == [list(p) for p in line.baseline]
            assert got["polygon"] == [list(p) for p in line.polygon]
        else:
            # ALTO 2/3: the baseline is a height across the line's box; the outline is the box.
            xs = [x for x, _ in line.polygon]
            assert got["baseline"] == [[min(xs), line.baseline[0][1]], [max(xs), line.baseline[0][1]]]
            assert len(got["polygon"]) == 4


def test_escriptorium_alto_zip_is_imported(actors: Actors) -> None:
    pages = [gen_page(41, "f001.jpg"), gen_page(42, "f002.jpg")]
    files = {}
    for page in pages:
        files[f"export_doc/{page.image_name}"] = image_bytes(page, "JPEG")
        files[f"export_doc/alto/{page.image_name[:-4]}.xml"] = escriptorium_alto(page)
    [document] = imported(actors.client, actors.archivist, zip_of(files))
    assert document["title"] == "export_doc"
    assert_lines(lines_of(actors.client, actors.archivist, document["id"]), pages)


def test_one_document_per_folder(actors: Actors) -> None:
    first, second = gen_page(51, "0001.png", lines=2), gen_page(52, "0001.png", lines=3)
    files = {
        "Briefe/Anna/0001.png": image_bytes(first),
        "Briefe/Anna/page/0001.xml": transkribus_page(first),
        "Briefe/Otto/0001.png": image_bytes(second),
        "Briefe/Otto/alto/0001.xml": kraken_alto(second),
    }
    documents = imported(actors.client, actors.archivist, zip_of(files), writer="Otto")
    assert [d["title"] for d in documents] == ["Anna", "Otto"]
    assert [d["writer"]["slug"] for d in documents] == ["otto", "otto"]
    assert len(lines_of(actors.client, actors.archivist, documents[1]["id"])) == 3


def test_a_title_for_several_documents_is_refused(actors: Actors) -> None:
    first, second = gen_page(53, "a.png", lines=1), gen_page(54, "b.png", lines=1)
    files = {
        "A/a.png": image_bytes(first),
        "A/a.xml": transkribus_page(first),
        "B/b.png": image_bytes(second),
        "B/b.xml": transkribus_page(second),
    }
    response = post_import(actors.client, actors.archivist, zip_of(files), title="Beide")
    assert response.status_code == 422
    assert response.json()["code"] == "INVALID_REQUEST"


def test_tolerant_of_what_real_files_contain(actors: Actors) -> None:
    """No baselines (derived inside the outline), an empty region, a line without text, the image
    named .tif in another folder while a .PNG lies elsewhere in the document."""
    page = gen_page(61, "scan.png", lines=3)
    blank = GenPage(
        page.image_name,
        page.width,
        page.height,
        (*page.lines[:2], page.lines[2].__class__(page.lines[2].baseline, page.lines[2].polygon, "")),
        page.seed,
    )
    xml = transkribus_page(blank, PAGE_2019, image_name="C:\\Scans\\Mappe 1\\SCAN.tif", baselines=False)
    files = {"Mappe/bilder/SCAN.PNG": image_bytes(page), "Mappe/page/scan.xml": xml}
    [document] = imported(actors.client, actors.archivist, zip_of(files))
    lines = lines_of(actors.client, actors.archivist, document["id"])
    assert [line["text"] for line in lines] == [page.lines[0].text, page.lines[1].text, ""]
    for got in lines:
        xs = [x for x, _ in got["polygon"]]
        ys = [y for _, y in got["polygon"]]
        (x0, y0), (x1, y1) = got["baseline"]
        assert (x0, x1) == (min(xs), max(xs))
        assert min(ys) < y0 == y1 < max(ys)


def test_coordinates_are_scaled_to_the_image_when_the_file_declares_another_size(actors: Actors) -> None:
    page = gen_page(71, "p.png", lines=2)
    files = {"p.png": image_bytes(page, size=(300, 200)), "p.xml": transkribus_page(page)}
    [document] = imported(actors.client, actors.archivist, zip_of(files), title="Halb")
    lines = lines_of(actors.client, actors.archivist, document["id"])
    for got, line in zip(lines, page.lines, strict=True):
        assert got["polygon"] == [[round(x / 2), round(y / 2)] for x, y in line.polygon]


# Transkribus' ALTO export says mm10 and writes pixels (its Page WIDTH/HEIGHT are the image's).
@pytest.mark.parametrize(("unit", "factor"), [("mm10", 254 / 300), ("inch1200", 4.0), ("mm10", 1.0)])
def test_alto_in_mm10_or_inch1200_is_placed_by_the_page_size(actors: Actors, unit: str, factor: float) -> None:
    page = gen_page(81 + int(factor * 10), "m.png", lines=2)
    files = {"m.png": image_bytes(page), "m.xml": kraken_alto(page, unit=unit, factor=factor)}
    [document] = imported(actors.client, actors.archivist, zip_of(files), title="Einheiten")
    lines = lines_of(actors.client, actors.archivist, document["id"])
    for got, line in zip(lines, page.lines, strict=True):
        for (gx, gy), (x, y) in zip(got["baseline"], line.baseline, strict=True):
            assert abs(gx - x) <= 1 and abs(gy - y) <= 1


def test_imported_pages_are_training_data_at_once(actors: Actors) -> None:
    services = services_of(actors.client)
    with services.db.sessions() as session:
        before = {
            kind: len(eligible_pages(session, kind)) for kind in (TrainingKind.RECOGNITION, TrainingKind.SEGMENTATION)
        }
    pages = [gen_page(91, "1.png"), gen_page(92, "2.png")]
    imported(actors.client, actors.archivist, transkribus_zip(pages))
    with services.db.sessions() as session:
        for kind, count in before.items():
            assert len(eligible_pages(session, kind)) == count + 2


def test_the_same_import_twice_is_a_duplicate(actors: Actors) -> None:
    data = transkribus_zip([gen_page(101, "1.png")])
    [document] = imported(actors.client, actors.archivist, data)
    response = post_import(actors.client, actors.archivist, data)
    assert response.status_code == 409
    assert response.json()["code"] == "DUPLICATE_DOCUMENT"
    assert response.json()["details"]["documentId"] == document["id"]


def test_a_failure_leaves_nothing_behind(actors: Actors, tmp_path: Any) -> None:
    good, bad = gen_page(111, "0001.png"), gen_page(112, "0001.png")
    files = {
        "A/0001.png": image_bytes(good),
        "A/page/0001.xml": transkribus_page(good),
        "B/0001.png": b"\x89PNG\r\n\x1a\n damaged",
        "B/page/0001.xml": transkribus_page(bad),
    }
    services = services_of(actors.client)
    with services.db.sessions() as session:
        documents, lines = session.scalar(select(func.count(Document.id))), session.scalar(select(func.count(Line.id)))
    response = post_import(actors.client, actors.archivist, zip_of(files))
    assert response.status_code == 422
    assert response.json()["code"] == "IMPORT_IMAGE_INVALID"
    with services.db.sessions() as session:
        assert session.scalar(select(func.count(Document.id))) == documents
        assert session.scalar(select(func.count(Line.id))) == lines
    stored = services.settings.storage_dir / "originals"
    assert not stored.exists() or not any(stored.iterdir())


def turned_photo(page: GenPage) -> bytes:
    """A photo stored a quarter turned (height x width pixels) with EXIF orientation 6."""
    image = Image.new("RGB", (page.height, page.width), (200, 210, page.seed % 200))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    return out.getvalue()


@pytest.mark.parametrize("declared_upright", [True, False])
def test_a_turned_photo_is_stored_as_the_xml_saw_it(actors: Actors, declared_upright: bool) -> None:
    """Upright (EXIF applied) where the XML's size is the upright one; as stored where the tool
    read the pixels unturned and its XML says so."""
    page = gen_page(121 + declared_upright, "foto.jpg", lines=2)
    declared = (page.width, page.height) if declared_upright else (page.height, page.width)
    files = {"foto.jpg": turned_photo(page), "foto.xml": transkribus_page(page, declared=declared)}
    [document] = imported(actors.client, actors.archivist, zip_of(files), title="Foto")
    services = services_of(actors.client)
    with services.db.sessions() as session:
        [row] = session.scalars(select(Page).where(Page.document_id == document["id"])).all()
        assert (row.width, row.height) == declared
    lines = lines_of(actors.client, actors.archivist, document["id"])
    assert [got["baseline"] for got in lines] == [
        [[min(x, declared[0] - 1), min(y, declared[1] - 1)] for x, y in line.baseline] for line in page.lines
    ]


def test_a_page_described_in_both_formats_is_imported_once(actors: Actors) -> None:
    pages = [gen_page(131, "0001.png", lines=2), gen_page(132, "0002.png", lines=3)]
    files = {}
    for page in pages:
        files[f"Brief/{page.image_name}"] = image_bytes(page)
        files[f"Brief/page/{page.image_name[:-4]}.xml"] = transkribus_page(page)
        files[f"Brief/alto/{page.image_name[:-4]}.xml"] = kraken_alto(page)
    [document] = imported(actors.client, actors.archivist, zip_of(files))
    assert document["pageCount"] == 2
    assert_lines(lines_of(actors.client, actors.archivist, document["id"]), pages)


def test_a_mets_file_orders_the_pages(actors: Actors) -> None:
    pages = [gen_page(141, "c.png", lines=1), gen_page(142, "a.png", lines=1), gen_page(143, "b.png", lines=1)]
    files = {"Akte/mets.xml": transkribus_mets(pages)}
    for page in pages:
        files[f"Akte/{page.image_name}"] = image_bytes(page)
        files[f"Akte/page/{page.image_name[:-4]}.xml"] = transkribus_page(page)
    [document] = imported(actors.client, actors.archivist, zip_of(files))
    lines = lines_of(actors.client, actors.archivist, document["id"])
    assert [line["text"] for line in lines] == [page.lines[0].text for page in pages]


@pytest.mark.parametrize("embedded", [False, True])
def test_transkribus_metadata_gives_the_title_writer_and_date(actors: Actors, embedded: bool) -> None:
    pages = [gen_page(151, "0001.png", lines=1), gen_page(152, "0002.png", lines=1)]
    metadata = transkribus_metadata(
        title="Brief an Mutter, Weihnachten 1917",
        author="Karl Müller",
        writer="Anna  Müller",
        createdFromTimestamp=transkribus_midnight_ms(date(1917, 12, 24)),
        createdToTimestamp=transkribus_midnight_ms(date(1917, 12, 24)),
        uploader="someone@example.org",
    )
    files = {"4711/Brief_1917/mets.xml": transkribus_mets(pages, metadata if embedded else None)}
    if not embedded:
        files["4711/Brief_1917/metadata.xml"] = metadata
    for page in pages:
        files[f"4711/Brief_1917/{page.image_name}"] = image_bytes(page)
        files[f"4711/Brief_1917/page/{page.image_name[:-4]}.xml"] = transkribus_page(page)
    [document] = imported(actors.client, actors.archivist, zip_of(files))
    assert document["title"] == "Brief an Mutter, Weihnachten 1917"
    # The hand (writer) over the author; whitespace collapsed as in every name.
    assert document["writer"]["name"] == "Anna Müller"
    assert document["date"] == "1917-12-24"
    assert_lines(lines_of(actors.client, actors.archivist, document["id"]), pages)
    # What the person gives in the form comes first.
    again = [gen_page(153, "0001.png", lines=1)]
    files = {"Brief/metadata.xml": metadata}
    for page in again:
        files[f"Brief/{page.image_name}"] = image_bytes(page)
        files[f"Brief/page/{page.image_name[:-4]}.xml"] = transkribus_page(page)
    [document] = imported(
        actors.client, actors.archivist, zip_of(files), title="Weihnachtsbrief", writer="Karl", date="1917-12"
    )
    assert (document["title"], document["writer"]["name"], document["date"]) == ("Weihnachtsbrief", "Karl", "1917-12")


@pytest.mark.parametrize(
    ("fields", "title", "writer", "when"),
    [
        # A whole month, a whole year (the last day, or the first after it), in zones east and west.
        ({"createdFromTimestamp": (1916, 5, 1, 2), "createdToTimestamp": (1916, 5, 31, 2)}, None, None, "1916-05"),
        ({"createdFromTimestamp": (1902, 1, 1, -5), "createdToTimestamp": (1903, 1, 1, -5)}, None, None, "1902"),
        ({"createdFromTimestamp": (1899, 2, 1, 1), "createdToTimestamp": (1899, 2, 28, 1)}, None, None, "1899-02"),
        # Only the first day: that day.
        ({"createdFromTimestamp": (1944, 6, 6, 2)}, None, None, "1944-06-06"),
        # A span the archive cannot keep, only the last day, not a number: no date.
        ({"createdFromTimestamp": (1916, 5, 3, 1), "createdToTimestamp": (1916, 5, 9, 1)}, None, None, None),
        ({"createdToTimestamp": (1916, 5, 3, 1)}, None, None, None),
        ({"createdFromTimestamp": "gestern", "createdToTimestamp": "9" * 30}, None, None, None),
        ({"createdFromTimestamp": "-99999999999999"}, None, None, None),
        # One day ending at the next midnight; Transkribus' "never dated" (0, or hours past it).
        (
            {"createdFromTimestamp": (1917, 12, 24, 1), "createdToTimestamp": (1917, 12, 25, 1)},
            None,
            None,
            "1917-12-24",
        ),
        ({"createdFromTimestamp": 0, "createdToTimestamp": 0}, None, None, None),
        ({"createdFromTimestamp": 33175290}, None, None, None),
        # Spans at the calendar's end (the day after 9999-12-31 does not exist): no date, no error.
        ({"createdFromTimestamp": (9999, 12, 1, 0), "createdToTimestamp": (9999, 12, 5, 0)}, None, None, None),
        ({"createdFromTimestamp": (9999, 1, 1, 0), "createdToTimestamp": (9999, 6, 1, 0)}, None, None, None),
        ({"createdFromTimestamp": (9999, 12, 31, 0)}, None, None, "9999-12-31"),
        # The author where no hand is named; empty fields are none; a long title is cut (also one
        # whose casefolded form is longer: ß folds to ss).
        ({"author": "Karl Müller", "title": "  "}, None, "Karl Müller", None),
        ({"title": "T" * 800, "writer": "\tAnna\n"}, "T" * 500, "Anna", None),
        ({"title": "ß" * 800}, "ß" * 500, None, None),
    ],
)
def test_transkribus_metadata_is_a_hint_what_it_does_not_say_is_left_out(
    actors: Actors, fields: dict[str, object], title: str | None, writer: str | None, when: str | None
) -> None:
    values = {
        name: transkribus_midnight_ms(date(*value[:3]), value[3]) if isinstance(value, tuple) else value
        for name, value in fields.items()
    }
    page = gen_page(161, "0001.png", lines=1)
    files = {
        "Akte/metadata.xml": transkribus_metadata(**values),
        "Akte/0001.png": image_bytes(page),
        "Akte/page/0001.xml": transkribus_page(page),
    }
    [document] = imported(actors.client, actors.archivist, zip_of(files))
    assert document["title"] == (title or "Akte")
    assert (document["writer"] or {}).get("name") == writer
    assert document["date"] == when


def test_an_empty_metadata_file_leaves_each_fact_to_the_copy_in_the_mets_file(actors: Actors) -> None:
    pages = [gen_page(171, "0001.png", lines=1)]
    dated = transkribus_midnight_ms(date(1916, 3, 2))
    metadata = transkribus_metadata(title="Feldpostbrief", writer="Karl", createdFromTimestamp=dated)
    files = {
        "Akte/metadata.xml": transkribus_metadata(title="", writer="Anna"),
        "Akte/mets.xml": transkribus_mets(pages, metadata),
        "Akte/0001.png": image_bytes(pages[0]),
        "Akte/page/0001.xml": transkribus_page(pages[0]),
    }
    [document] = imported(actors.client, actors.archivist, zip_of(files))
    assert (document["title"], document["writer"]["name"], document["date"]) == ("Feldpostbrief", "Anna", "1916-03-02")


def test_imported_text_is_searchable_at_once_also_across_the_page_break(actors: Actors) -> None:
    first, second = gen_page(31, "0001.png", lines=2), gen_page(32, "0002.png", lines=2)
    first = replace(
        first, lines=(replace(first.lines[0], text="Liebe Anna,"), replace(first.lines[1], text="zu Weih-"))
    )
    second = replace(
        second,
        lines=(
            replace(second.lines[0], text="nachten kommt Tante Gertrud"),
            replace(second.lines[1], text="Dein Karl"),
        ),
    )
    [document] = imported(actors.client, actors.archivist, transkribus_zip([first, second]))
    for query, page_number in (("Gertrud", 2), ("Weihnachten", 1), ('"Weihnachten kommt"', 1)):
        response = actors.client.get("/api/search", params={"q": query}, headers=actors.archivist)
        assert response.status_code == 200, response.text
        [result] = response.json()["results"]
        assert result["document"]["id"] == document["id"]
        assert [hit["pageNumber"] for hit in result["hits"]] == [page_number]
        assert result["hits"][0]["corrected"] is True


def _page_of(lines: str, creator: str = "Transkribus") -> bytes:
    return (
        '<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15">'
        f"<Metadata><Creator>{creator}</Creator></Metadata>"
        f'<Page imageFilename="p.png" imageWidth="600" imageHeight="400"><TextRegion id="r1">{lines}'
        "</TextRegion></Page></PcGts>"
    ).encode()


def _text_line(line_id: str, shapes: str, text: str) -> str:
    return f'<TextLine id="{line_id}">{shapes}<TextEquiv><Unicode>{text}</Unicode></TextEquiv></TextLine>'


def test_a_line_given_by_two_points_is_placed_not_dropped(actors: Actors) -> None:
    """Two corners of a box, or two points on one height (a baseline): the line and its text are kept."""
    lines = (
        _text_line("box", '<Coords points="10,60 300,90"/>', "Liebe Mutter")
        + _text_line("flat", '<Coords points="20,150 320,150"/>', "wie geht es")
        + _text_line("empty", "", "")
    )
    image = image_bytes(gen_page(91, "p.png", lines=1))
    [document] = imported(actors.client, actors.archivist, zip_of({"p.png": image, "p.xml": _page_of(lines)}))
    box, flat = lines_of(actors.client, actors.archivist, document["id"])
    assert (box["text"], flat["text"]) == ("Liebe Mutter", "wie geht es")
    assert box["polygon"] == [[10, 60], [300, 60], [300, 90], [10, 90]]
    assert box["baseline"] == [[10, 84], [300, 84]]
    assert flat["baseline"] == [[20, 150], [320, 150]]
    assert min(y for _, y in flat["polygon"]) < 150 < max(y for _, y in flat["polygon"])


def test_a_line_with_text_and_nothing_to_place_it_by_is_refused_naming_it(actors: Actors) -> None:
    lines = _text_line("r1l1", '<Coords points="10,10 300,10 300,40"/>', "da") + _text_line("r1l7", "", "verloren")
    image = image_bytes(gen_page(92, "p.png", lines=1))
    response = post_import(actors.client, actors.archivist, zip_of({"p.png": image, "p.xml": _page_of(lines)}))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "IMPORT_INVALID_XML"
    assert "r1l7" in response.json()["message"] and "p.xml" in response.json()["message"]
    with services_of(actors.client).db.sessions() as session:
        assert session.scalar(select(func.count(Document.id))) == 0


def test_an_alto_line_without_its_own_box_is_placed_by_its_words(actors: Actors) -> None:
    """All of a TextLine's HPOS/VPOS/WIDTH/HEIGHT are optional in ALTO; its Strings' boxes place it."""
    alto = (
        b'<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#"><Description><MeasurementUnit>pixel'
        b"</MeasurementUnit><sourceImageInformation><fileName>p.png</fileName></sourceImageInformation>"
        b'</Description><Layout><Page WIDTH="600" HEIGHT="400"><PrintSpace><TextBlock ID="b">'
        b'<TextLine ID="l1"><String CONTENT="Liebe" HPOS="10" VPOS="50" WIDTH="80" HEIGHT="30"/><SP/>'
        b'<String CONTENT="Mutter" HPOS="100" VPOS="45" WIDTH="90" HEIGHT="40"/></TextLine>'
        b"</TextBlock></PrintSpace></Page></Layout></alto>"
    )
    image = image_bytes(gen_page(93, "p.png", lines=1))
    [document] = imported(actors.client, actors.archivist, zip_of({"p.png": image, "p.xml": alto}))
    [line] = lines_of(actors.client, actors.archivist, document["id"])
    assert line["text"] == "Liebe Mutter"
    assert line["polygon"] == [[10, 45], [190, 45], [190, 85], [10, 85]]


@pytest.mark.parametrize(
    "own", ["", 'HPOS="0" VPOS="0" WIDTH="0" HEIGHT="0"', 'HPOS="10" VPOS="45" WIDTH="180" HEIGHT="0"']
)
def test_an_alto_line_whose_own_box_has_no_area_is_placed_by_its_words(actors: Actors, own: str) -> None:
    alto = (
        '<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#"><Description><MeasurementUnit>pixel'
        "</MeasurementUnit><sourceImageInformation><fileName>p.png</fileName></sourceImageInformation>"
        '</Description><Layout><Page WIDTH="600" HEIGHT="400"><PrintSpace><TextBlock ID="b">'
        f'<TextLine ID="l1" {own}><String CONTENT="Liebe" HPOS="10" VPOS="50" WIDTH="80" HEIGHT="30"/><SP/>'
        '<String CONTENT="Mutter" HPOS="100" VPOS="45" WIDTH="90" HEIGHT="40"/>'
        '<String CONTENT="" HPOS="500" VPOS="300" WIDTH="-50" HEIGHT="10"/></TextLine>'
        "</TextBlock></PrintSpace></Page></Layout></alto>"
    ).encode()
    image = image_bytes(gen_page(99 + len(own), "p.png", lines=1))
    [document] = imported(actors.client, actors.archivist, zip_of({"p.png": image, "p.xml": alto}))
    [line] = lines_of(actors.client, actors.archivist, document["id"])
    assert line["polygon"] == [[10, 45], [190, 45], [190, 85], [10, 85]]


def test_control_characters_in_imported_text_are_dropped_so_it_can_be_corrected(actors: Actors) -> None:
    """XML allows U+007F, which no correction may hold: the line would be stuck with it."""
    lines = _text_line("r1l1", '<Coords points="10,10 300,10 300,40 10,40"/>', "Liebe&#127; Mutter")
    image = image_bytes(gen_page(94, "p.png", lines=1))
    [document] = imported(actors.client, actors.archivist, zip_of({"p.png": image, "p.xml": _page_of(lines)}))
    [line] = lines_of(actors.client, actors.archivist, document["id"])
    assert line["text"] == line["ocrText"] == "Liebe Mutter"
    response = actors.client.patch(
        f"/api/lines/{line['id']}", headers=actors.archivist, json={"text": "Liebe Mutter!", "version": line["version"]}
    )
    assert response.status_code == 200, response.text


def test_an_earlier_export_keeps_the_ocr_reading_of_its_second_text_equiv(actors: Actors) -> None:
    """Exports before 2026-11-27 kept a corrected line's OCR reading as TextEquiv index 1."""
    lines = (
        '<TextLine id="r1l1"><Coords points="10,10 300,10 300,40 10,40"/>'
        '<TextEquiv index="0"><Unicode>Weihnachten</Unicode></TextEquiv>'
        '<TextEquiv index="1"><Unicode>Weihnaehten</Unicode></TextEquiv></TextLine>'
    )
    image = image_bytes(gen_page(95, "p.png", lines=1))
    files = {"p.png": image, "p.xml": _page_of(lines, creator="Familienarchiv OCR")}
    [document] = imported(actors.client, actors.archivist, zip_of(files))
    [line] = lines_of(actors.client, actors.archivist, document["id"])
    assert (line["text"], line["ocrText"]) == ("Weihnachten", "Weihnaehten")


@pytest.mark.parametrize(
    ("missing", "other"),
    [
        ("Brief A", "Brief B"),  # side by side
        ("", "Brief B"),  # the document at the ZIP's root
        ("Brief A", ""),  # beside the document at the root
        ("Brief A", "Brief A/Beilage"),  # a document inside the other's folder
        ("Brief A/Beilage", "Brief A"),
    ],
)
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])  # the other's image found by name, or by stem
def test_a_missing_image_is_never_taken_from_another_documents_folder(
    actors: Actors, missing: str, other: str, fmt: str
) -> None:
    """Two documents in one ZIP, one's image missing: refused, not filled with the other's page of
    the same name (by name or by stem)."""
    first, second = gen_page(96, "0001.png", lines=1), gen_page(97, "0001.png", lines=1)

    def under(folder: str, name: str) -> str:
        return f"{folder}/{name}" if folder else name

    files = {
        under(missing, "page/0001.xml"): transkribus_page(first),
        under(other, f"0001.{fmt.lower()}"): image_bytes(second, fmt),
        under(other, "page/0001.xml"): transkribus_page(second, image_name=f"0001.{fmt.lower()}"),
    }
    response = post_import(actors.client, actors.archivist, zip_of(files))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "IMPORT_IMAGE_MISSING"
    assert response.json()["details"]["file"] == under(missing, "page/0001.xml")


def test_the_images_of_a_lone_document_may_lie_in_a_folder_of_their_own(actors: Actors) -> None:
    page = gen_page(98, "0001.png", lines=2)
    files = {"export/alto/0001.xml": kraken_alto(page), "bilder/0001.png": image_bytes(page)}
    [document] = imported(actors.client, actors.archivist, zip_of(files))
    assert_lines(lines_of(actors.client, actors.archivist, document["id"]), [page])
