"""Training data from the database: which lines count, the held-out pages, the ZIP the OCR service trains on."""

from __future__ import annotations

import io
import itertools
import math
import random
import tempfile
import time
import tracemalloc
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from PIL import Image
from sqlalchemy import delete, update

from backend.db import Database
from backend.documents.models import Document, DocumentStatus, Line, Page, Writer
from backend.documents.render import RenderLimits
from backend.errors import AppError, ErrorCode
from backend.storage import Storage
from backend.training import dataset
from backend.training.dataset import (
    EligiblePage,
    GroundTruthLine,
    NotEnoughPagesError,
    ZipSummary,
    eligible_by_writer,
    eligible_pages,
    ground_truth,
    heldout_count,
    heldout_shortfall,
    new_lines_by_writer,
    new_lines_since,
    split_heldout,
    write_training_zip,
)
from backend.training.models import TrainingKind
from backend.users.models import Role, User
from tests.backend.conftest import Actors, services_of
from tests.backend.documents import make_document
from tests.backend.ground_truth import correct, misread, ocr_line, review, store_lines, upload, upload_page_images
from tests.backend.test_pages import _ocr_limits, exif_jpeg
from tests.support.models import TINY_SPEC
from tests.support.synthetic import page_texts, render_page, to_png, to_tiff

SCHEMA = Path(__file__).parents[1] / "schemas" / "pagecontent.xsd"
PAGE = "{http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15}"
DB_FUZZ = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
UNIQUE = itertools.count(1)


# --- which lines count: the definitions against a model of them -----------------------------------

T = [datetime(2026, 3, day, tzinfo=UTC) for day in (1, 2, 3, 4)]


@dataclass(frozen=True)
class LineSpec:
    ocr_text: str
    text: str | None
    corrected_at: datetime


@dataclass(frozen=True)
class PageSpec:
    reviewed_at: datetime | None
    lines: tuple[LineSpec, ...]


@dataclass(frozen=True)
class DocumentSpec:
    writer: int | None  # index into the writers
    trashed: bool
    pages: tuple[PageSpec, ...]


TEXTS = st.sampled_from(["Liebe Mutter", "", "  ", "Gruß 1917"])
LINES = st.builds(LineSpec, TEXTS, st.none() | TEXTS, st.sampled_from(T))
PAGES = st.builds(PageSpec, st.none() | st.sampled_from(T), st.lists(LINES, max_size=4).map(tuple))
DOCUMENTS = st.builds(
    DocumentSpec,
    st.none() | st.integers(0, 2),
    st.booleans(),
    st.lists(PAGES, min_size=1, max_size=3).map(tuple),
)


def _ground_truth(page: PageSpec, line: LineSpec) -> bool:
    current = line.text if line.text is not None else line.ocr_text
    return (line.text is not None or page.reviewed_at is not None) and current.strip() != ""


def _fill(
    database: Database, documents: Sequence[DocumentSpec]
) -> tuple[list[int], dict[tuple[int, int], tuple[int, int]]]:
    """The specified rows (the tables emptied first); the writers' ids, and (page id, document id)
    by (document, page) index."""
    with database.engine.begin() as connection:
        for table in (Line, Page, Document, Writer, User):
            connection.execute(delete(table))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    page_ids: dict[tuple[int, int], tuple[int, int]] = {}
    with database.sessions() as session:
        user = User(username="erika", password_hash="x", role=Role.ARCHIVIST, created_at=now)
        writers = [Writer(name=f"W{n}", slug=f"w{n}", created_at=now) for n in range(3)]
        session.add_all([user, *writers])
        session.flush()
        for d, spec in enumerate(documents):
            n = next(UNIQUE)
            document = Document(
                title="Brief",
                title_folded="brief",
                writer_id=writers[spec.writer].id if spec.writer is not None else None,
                media_type="application/pdf",
                storage_key=f"k{n}",
                sha256=f"{n:064d}",
                size_bytes=1,
                page_count=len(spec.pages),
                status=DocumentStatus.DONE,
                created_by=user.id,
                created_at=now,
                deleted_at=now if spec.trashed else None,
            )
            session.add(document)
            session.flush()
            for p, page_spec in enumerate(spec.pages):
                page = Page(
                    document_id=document.id,
                    number=p + 1,
                    reviewed_at=page_spec.reviewed_at,
                    reviewed_by=user.id if page_spec.reviewed_at else None,
                )
                session.add(page)
                session.flush()
                page_ids[d, p] = page.id, document.id
                session.add_all(
                    Line(
                        page_id=page.id,
                        order_index=i,
                        baseline=[[0, 10], [50, 10]],
                        polygon=[[0, 0], [50, 0], [50, 12], [0, 12]],
                        ocr_text=line.ocr_text,
                        text=line.text,
                        corrected_by=user.id if line.text is not None else None,
                        corrected_at=line.corrected_at if line.text is not None else None,
                    )
                    for i, line in enumerate(page_spec.lines)
                )
        session.commit()
        return [w.id for w in writers], page_ids


def _expected(
    documents: Sequence[DocumentSpec],
    page_ids: dict[tuple[int, int], tuple[int, int]],
    kind: TrainingKind,
    writer: int | None,
) -> list[EligiblePage]:
    """The eligible pages as the definitions in the design say."""
    found = []
    for d, spec in enumerate(documents):
        if spec.trashed or (writer is not None and spec.writer != writer):
            continue
        for p, page in enumerate(spec.pages):
            if kind is TrainingKind.SEGMENTATION:
                lines = len(page.lines) if page.reviewed_at is not None else 0
            else:
                lines = sum(_ground_truth(page, line) for line in page.lines)
            if lines:
                page_id, document_id = page_ids[d, p]
                found.append(EligiblePage(page_id, document_id, p + 1, lines))
    return found


def _new_lines(documents: Sequence[DocumentSpec], writer: int, since: datetime | None) -> int:
    count = 0
    for spec in documents:
        if spec.trashed or spec.writer != writer:
            continue
        for page in spec.pages:
            for line in page.lines:
                recent = (
                    since is None
                    or (line.text is not None and line.corrected_at > since)
                    or (page.reviewed_at is not None and page.reviewed_at > since)
                )
                count += _ground_truth(page, line) and recent
    return count


@DB_FUZZ
@given(documents=st.lists(DOCUMENTS, max_size=5), since=st.tuples(*[st.none() | st.sampled_from(T)] * 3))
def test_eligible_pages_follow_the_definitions(
    db: Database, documents: list[DocumentSpec], since: tuple[datetime | None, ...]
) -> None:
    writer_ids, page_ids = _fill(db, documents)
    with db.sessions() as session:
        for kind in (TrainingKind.RECOGNITION, TrainingKind.SEGMENTATION):
            assert eligible_pages(session, kind) == _expected(documents, page_ids, kind, None)
        by_writer = eligible_by_writer(session)
        for n, writer_id in enumerate(writer_ids):
            expected = _expected(documents, page_ids, TrainingKind.WRITER, n)
            assert eligible_pages(session, TrainingKind.WRITER, writer_id) == expected
            assert by_writer.get(writer_id, []) == expected
        assert set(by_writer) <= set(writer_ids)
        new = new_lines_by_writer(session, dict(zip(writer_ids, since, strict=True)))
        for n, writer_id in enumerate(writer_ids):
            expected_new = _new_lines(documents, n, since[n])
            assert new.get(writer_id, 0) == expected_new
            assert new_lines_since(session, writer_id, since[n]) == expected_new
        for (d, p), (page_id, _) in page_ids.items():
            page = documents[d].pages[p]
            expected_lines = [
                (i, line.text if line.text is not None else line.ocr_text)
                for i, line in enumerate(page.lines)
                if not documents[d].trashed and _ground_truth(page, line)
            ]
            assert [(line.order_index, line.text) for line in ground_truth(session, page_id)] == expected_lines


def test_a_writer_run_needs_its_writer(db: Database) -> None:
    with db.sessions() as session, pytest.raises(ValueError, match="writer"):
        eligible_pages(session, TrainingKind.WRITER)


def test_ground_truth_carries_the_lines_geometry(db: Database) -> None:
    _, page_ids = _fill(db, [DocumentSpec(None, False, (PageSpec(T[0], (LineSpec("a", None, T[0]),)),))])
    with db.sessions() as session:
        assert ground_truth(session, page_ids[0, 0][0]) == [
            GroundTruthLine(0, "a", [[0, 10], [50, 10]], [[0, 0], [50, 0], [50, 12], [0, 12]])
        ]


# --- the held-out pages -----------------------------------------------------------------------------


def _pages(ids: Sequence[int]) -> list[EligiblePage]:
    return [EligiblePage(page_id=i, document_id=i // 3, page_number=i % 3 + 1, lines=i % 7 + 1) for i in ids]


PAGE_IDS = st.lists(st.integers(1, 10**6), unique=True, max_size=60)
SHARES = st.floats(min_value=0.01, max_value=0.5)
MIN_PAGES = st.integers(1, 8)
SEEDS = st.integers(0, 2**31 - 1)


@given(ids=PAGE_IDS, share=SHARES, min_pages=MIN_PAGES, seed=SEEDS)
def test_held_out_pages_are_whole_pages_chosen_by_the_seed(
    ids: list[int], share: float, min_pages: int, seed: int
) -> None:
    pages = _pages(ids)
    missing = heldout_shortfall(pages, min_pages)
    assert missing == heldout_shortfall(len(pages), min_pages) == max(0, min_pages + 1 - len(pages))
    if missing:
        with pytest.raises(NotEnoughPagesError) as refused:
            split_heldout(pages, share, min_pages, seed)
        assert refused.value.missing == missing
        # Exactly that many more pages are enough.
        more = _pages([max(ids, default=0) + n for n in range(1, missing + 1)])
        assert heldout_shortfall(pages + more, min_pages) == 0
        return
    train, heldout = split_heldout(pages, share, min_pages, seed)
    assert {p.page_id for p in train}.isdisjoint({p.page_id for p in heldout})
    assert sorted(train + heldout, key=lambda p: p.page_id) == sorted(pages, key=lambda p: p.page_id)
    assert len(heldout) == heldout_count(len(pages), share, min_pages)
    assert min_pages <= len(heldout) and len(train) >= 1
    assert len(heldout) >= share * len(pages) or len(train) == 1
    # Both sides keep the order they came in.
    assert train == [p for p in pages if p in train] and heldout == [p for p in pages if p in heldout]
    # The same seed: the same pages, whatever order they come in.
    assert split_heldout(list(reversed(pages)), share, min_pages, seed) == (train[::-1], heldout[::-1])


@given(ids=PAGE_IDS.filter(lambda ids: len(ids) >= 20), seed=SEEDS)
def test_other_seeds_choose_other_pages(ids: list[int], seed: int) -> None:
    pages = _pages(ids)
    chosen = {tuple(p.page_id for p in split_heldout(pages, 0.2, 2, s)[1]) for s in range(seed, seed + 5)}
    assert len(chosen) > 1


@given(ids=PAGE_IDS.filter(lambda ids: len(ids) >= 4), extra=PAGE_IDS, seed=SEEDS)
def test_new_pages_never_move_a_page_to_the_other_side_but_their_own(
    ids: list[int], extra: list[int], seed: int
) -> None:
    """With a fixed number held out, a page held out among more pages was held out among fewer:
    the choice ranks each page by the seed and its own id."""
    pages = _pages(ids)
    more = pages + _pages([i for i in extra if i not in ids])
    few = {p.page_id for p in split_heldout(pages, 0.01, 2, seed)[1]}
    many = {p.page_id for p in split_heldout(more, 0.01, 2, seed)[1]}
    assert many & set(ids) <= few


@pytest.mark.parametrize(
    ("share", "min_pages", "problem"),
    [(0.0, 2, "share"), (1.0, 2, "share"), (0.1, 0, "at least one")],
)
def test_a_split_with_nonsense_arguments_is_refused(share: float, min_pages: int, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        split_heldout(_pages(range(1, 20)), share, min_pages, 1)


def test_a_page_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        split_heldout(_pages([1, 2, 3, 4]) + _pages([2]), 0.1, 1, 1)


# --- the ZIP ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMA)))


def _storage(actors: Actors) -> tuple[Storage, RenderLimits]:
    pages = services_of(actors.client).pages
    return pages.storage, pages.limits


def _zip(actors: Actors, pages: Sequence[EligiblePage], kind: TrainingKind, dest: Any) -> ZipSummary:
    services = services_of(actors.client)
    storage, limits = _storage(actors)
    with services.db.sessions() as session:
        return write_training_zip(session, storage, limits, pages, kind, dest, renderers=services.pages.pdf)


def _eligible(actors: Actors, kind: TrainingKind, writer_id: int | None = None) -> list[EligiblePage]:
    services = services_of(actors.client)
    with services.db.sessions() as session:
        return eligible_pages(session, kind, writer_id)


@dataclass(frozen=True)
class ZippedPage:
    image: Image.Image
    xml: etree._Element
    image_entry: zipfile.ZipInfo
    xml_entry: zipfile.ZipInfo

    def lines(self) -> list[tuple[str, str, str, str]]:
        """(id, outline points, baseline points, text) of each TextLine, in document order."""
        return [
            (
                line.get("id"),
                line.find(f"{PAGE}Coords").get("points"),
                line.find(f"{PAGE}Baseline").get("points"),
                line.find(f"{PAGE}TextEquiv/{PAGE}Unicode").text or "",
            )
            for line in self.xml.iter(f"{PAGE}TextLine")
        ]


def _unpacked(data: bytes, schema: etree.XMLSchema) -> dict[int, ZippedPage]:
    """The ZIP's pages by page id; every XML checked against the PAGE schema and its image name."""
    pages = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        assert len(names) == len(set(names))
        ids = sorted({int(name[1:].split(".")[0]) for name in names})
        assert sorted(names) == sorted(f"p{i}.{ext}" for i in ids for ext in ("png", "xml"))
        for page_id in ids:
            xml = etree.fromstring(archive.read(f"p{page_id}.xml"))
            schema.assertValid(xml)
            page = xml.find(f"{PAGE}Page")
            assert page is not None and page.get("imageFilename") == f"p{page_id}.png"
            image = Image.open(io.BytesIO(archive.read(f"p{page_id}.png")), formats=["PNG"])
            image.load()
            assert image.size == (int(page.get("imageWidth")), int(page.get("imageHeight")))
            pages[page_id] = ZippedPage(
                image, xml, archive.getinfo(f"p{page_id}.png"), archive.getinfo(f"p{page_id}.xml")
            )
    return pages


def _page_list(actors: Actors, document_id: int) -> list[dict[str, Any]]:
    response = actors.client.get(f"/api/documents/{document_id}/pages", headers=actors.admin)
    assert response.status_code == 200, response.text
    return list(response.json())


def _points(points: Sequence[Sequence[int]]) -> str:
    return " ".join(f"{x},{y}" for x, y in points)


def test_the_zip_holds_each_page_upright_at_the_ocr_size_with_its_ground_truth_as_page_xml(
    actors: Actors, page_schema: etree.XMLSchema
) -> None:
    from ocr_service.decoding import ParseBudget
    from ocr_service.image_pages import ImagePages
    from ocr_service.pdf_pages import PdfPages
    from ocr_service.pdf_render import shared_renderer

    client, erika = actors.client, actors.archivist
    rendered = render_page(page_texts(7, 3, words=3), width=500, height=300, font_size=24, margin=20)
    [png_id] = upload_page_images(client, erika, [rendered], "Karte")
    photo = exif_jpeg(6, size=(160, 100))  # stored lying: upright 100 × 160
    photo_id = upload(client, erika, photo, "Foto")
    pdf = make_document("pdf", 3, pages=2)
    pdf_id = upload(client, erika, pdf, "Brief")
    box = [[0, 0], [60, 0], [60, 20], [0, 20]]
    # Coordinates past the page's edges (kraken's outlines do that) and in fractions of a pixel.
    store_lines(client, photo_id, 1, [ocr_line(0, "oben", [[-5, 30.4], [120, 30.6]], [[-5, 0], [200, 0], [200, 40]])])
    store_lines(client, pdf_id, 2, [ocr_line(i, f"z{i}", [[5, 20 + i * 30], [70, 20 + i * 30]], box) for i in range(3)])
    correct(client, erika, png_id, 2, rendered.lines[2].text)
    correct(client, erika, png_id, 0, rendered.lines[0].text)
    review(client, erika, photo_id)
    correct(client, erika, pdf_id, 1, "Zeile\teins\n", page=2)  # a person's tab and line break: one line

    pages = _eligible(actors, TrainingKind.RECOGNITION)
    assert [(p.document_id, p.page_number, p.lines) for p in pages] == [
        (png_id, 1, 2),
        (photo_id, 1, 1),
        (pdf_id, 2, 1),
    ]
    with tempfile.TemporaryFile() as dest:
        summary = _zip(actors, pages, TrainingKind.RECOGNITION, dest)
        dest.seek(0)
        zipped = _unpacked(dest.read(), page_schema)
    assert summary == ZipSummary(pages=3, lines=4)
    png_page, photo_page, pdf_page = (zipped[p.page_id] for p in pages)

    # Sizes: those of the page list (the OCR's pixels), for every kind of original.
    for document_id, number, page in ((png_id, 1, png_page), (photo_id, 1, photo_page), (pdf_id, 2, pdf_page)):
        listed = _page_list(actors, document_id)[number - 1]
        assert page.image.size == (listed["width"], listed["height"])
        assert page.image_entry.compress_type == zipfile.ZIP_STORED
        assert page.xml_entry.compress_type == zipfile.ZIP_DEFLATED
    # Pixels: exactly the page the OCR service reads (PNG is lossless).
    assert png_page.image.convert("RGB").tobytes() == rendered.image.convert("RGB").tobytes()
    ocr_photo = ImagePages(photo, "JPEG", _ocr_limits(), ParseBudget(60)).page(0)
    assert photo_page.image.size == (100, 160)
    assert photo_page.image.convert("RGB").tobytes() == ocr_photo.convert("RGB").tobytes()
    ocr_pdf = PdfPages(pdf, _ocr_limits(), shared_renderer())
    try:
        ocr_pdf_page = ocr_pdf.page(1)
    finally:
        ocr_pdf.close()
    assert pdf_page.image.size == ocr_pdf_page.size
    assert pdf_page.image.convert("RGB").tobytes() == ocr_pdf_page.convert("RGB").tobytes()

    # Lines: the ground truth only, in reading order, with the person's text.
    assert [(line_id, text) for line_id, _, _, text in png_page.lines()] == [
        ("l0", rendered.lines[0].text),
        ("l2", rendered.lines[2].text),
    ]
    assert png_page.lines()[1][1:3] == (_points(rendered.lines[2].polygon), _points(rendered.lines[2].baseline))
    assert photo_page.lines() == [("l0", "0,0 99,0 99,40", "0,30 99,31", "oben")]
    assert [(line_id, text) for line_id, _, _, text in pdf_page.lines()] == [("l1", "Zeile eins ")]


def test_a_16_bit_scan_is_the_grey_page_the_ocr_service_reads_not_a_white_one(
    actors: Actors, page_schema: etree.XMLSchema
) -> None:
    from ocr_service.decoding import ParseBudget
    from ocr_service.image_pages import ImagePages

    scan = Image.new("I;16", (120, 60), 60_000)  # paper
    for x in range(10, 110):
        for y in range(25, 32):
            scan.putpixel((x, y), 9_000)  # ink
    content = to_png(scan)
    document_id = upload(actors.client, actors.archivist, content, "Scan")
    store_lines(
        actors.client, document_id, 1, [ocr_line(0, "Tinte", [[10, 31], [110, 31]], [[10, 24], [110, 24], [110, 33]])]
    )
    review(actors.client, actors.archivist, document_id)
    chosen = _eligible(actors, TrainingKind.RECOGNITION)
    buffer = io.BytesIO()
    _zip(actors, chosen, TrainingKind.RECOGNITION, buffer)
    image = _unpacked(buffer.getvalue(), page_schema)[chosen[0].page_id].image
    ocr = ImagePages(content, "PNG", _ocr_limits(), ParseBudget(60)).page(0)
    assert (image.mode, ocr.mode) == ("L", "L")
    assert image.tobytes() == ocr.tobytes()
    assert image.getpixel((50, 28)) < 64 < 192 < image.getpixel((5, 5))


def test_a_segmentation_zip_takes_every_line_of_the_pages_reviewed_now(
    actors: Actors, page_schema: etree.XMLSchema
) -> None:
    client, erika = actors.client, actors.archivist
    pages = [
        render_page(page_texts(seed, 3, words=3), width=420, height=260, font_size=22, margin=20) for seed in (1, 2, 3)
    ]
    first, second, third = upload_page_images(client, erika, pages, "Seite")
    for document_id in (first, second, third):
        review(client, erika, document_id)
    correct(client, erika, first, 1, "nur eine korrigiert")
    chosen = _eligible(actors, TrainingKind.SEGMENTATION)
    assert [p.lines for p in chosen] == [3, 3, 3]
    # Between choosing and zipping: one document goes to the trash, one page's review is taken back.
    assert client.delete(f"/api/documents/{second}", headers=erika).status_code == 204
    assert client.delete(f"/api/documents/{third}/pages/1/review", headers=erika).status_code == 200

    buffer = io.BytesIO()
    summary = _zip(actors, chosen, TrainingKind.SEGMENTATION, buffer)
    zipped = _unpacked(buffer.getvalue(), page_schema)
    assert summary == ZipSummary(pages=1, lines=3)
    assert list(zipped) == [chosen[0].page_id]
    texts = [text for _, _, _, text in zipped[chosen[0].page_id].lines()]
    assert texts == [misread(pages[0].lines[0].text), "nur eine korrigiert", misread(pages[0].lines[2].text)]
    assert [baseline for _, _, baseline, _ in zipped[chosen[0].page_id].lines()] == [
        _points(line.baseline) for line in pages[0].lines
    ]


def test_a_page_whose_size_is_unknown_gets_it_as_the_page_list_would(
    actors: Actors, page_schema: etree.XMLSchema
) -> None:
    client, erika = actors.client, actors.archivist
    document_id = upload(
        client, erika, to_tiff([Image.new("RGB", (90, 70), "white"), Image.new("RGB", (50, 80), "white")]), "Fax"
    )
    store_lines(client, document_id, 2, [ocr_line(0, "a", [[1, 10], [40, 10]], [[1, 1], [40, 1], [40, 12]])])
    review(client, erika, document_id, 2)
    services = services_of(client)
    with services.db.sessions() as session:
        session.execute(update(Page).values(width=None, height=None))
        session.commit()
    chosen = _eligible(actors, TrainingKind.RECOGNITION)
    buffer = io.BytesIO()
    _zip(actors, chosen, TrainingKind.RECOGNITION, buffer)
    assert _unpacked(buffer.getvalue(), page_schema)[chosen[0].page_id].image.size == (50, 80)
    with services.db.sessions() as session:
        assert session.get_one(Page, chosen[0].page_id).width == 50


def test_a_page_the_ocr_service_read_at_another_size_is_scaled_to_its_lines(
    actors: Actors, page_schema: etree.XMLSchema
) -> None:
    client, erika = actors.client, actors.archivist
    document_id = upload(client, erika, to_png(Image.new("RGB", (100, 60), "white")), "Zettel")
    services = services_of(client)
    with services.db.sessions() as session:
        # As the OCR service reports it: a size of its own comes with the lines.
        services.lines.replace_page(
            session,
            document_id,
            1,
            [ocr_line(0, "x", [[10, 50], [190, 50]], [[10, 5], [190, 5], [190, 55]])],
            model="base",
            model_version="1",
            now=services.clock(),
            size=(200, 120),
        )
        session.commit()
    review(client, erika, document_id)
    buffer = io.BytesIO()
    chosen = _eligible(actors, TrainingKind.RECOGNITION)
    _zip(actors, chosen, TrainingKind.RECOGNITION, buffer)
    page = _unpacked(buffer.getvalue(), page_schema)[chosen[0].page_id]
    assert page.image.size == (200, 120)
    assert page.lines() == [("l0", "10,5 190,5 190,55", "10,50 190,50", "x")]


def test_lines_without_usable_positions_are_left_out_and_a_page_without_any_too(
    actors: Actors, page_schema: etree.XMLSchema
) -> None:
    client, erika = actors.client, actors.archivist
    good = [[5, 20], [50, 20]]
    outline = [[5, 5], [50, 5], [50, 25]]
    broken = [
        ocr_line(0, "ein Punkt", [[5, 20]], outline),
        ocr_line(1, "kein Umriss", good, []),
        ocr_line(2, "Unsinn", [["a", 1], [2, 3]], outline),
        ocr_line(3, "zu tief", [[1, 2, 3], [4, 5, 6]], outline),
        ocr_line(4, "\t\x02", good, outline),  # nothing left to read once XML-safe
    ]
    only_broken = upload(client, erika, to_png(Image.new("RGB", (80, 40), "white")), "A")
    store_lines(client, only_broken, 1, broken)
    mixed = upload(client, erika, to_png(Image.new("RGB", (81, 40), "white")), "B")
    far = [[-(10**30), 20], [10**30, 20]]
    store_lines(
        client, mixed, 1, [*broken, ocr_line(5, "gut\x01 \x7f\ufffe", good, outline), ocr_line(6, "weit", far, outline)]
    )
    for document_id in (only_broken, mixed):
        review(client, erika, document_id)
    chosen = _eligible(actors, TrainingKind.RECOGNITION)
    assert [p.lines for p in chosen] == [5, 7]
    buffer = io.BytesIO()
    summary = _zip(actors, chosen, TrainingKind.RECOGNITION, buffer)
    zipped = _unpacked(buffer.getvalue(), page_schema)
    assert summary == ZipSummary(pages=1, lines=2)
    assert zipped[chosen[1].page_id].lines() == [
        ("l5", "5,5 50,5 50,25", "5,20 50,20", "gut \x7f"),
        ("l6", "5,5 50,5 50,25", "0,20 80,20", "weit"),
    ]


COORDINATES = st.one_of(
    st.integers(-(10**12), 10**12), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.text(max_size=2)
)
POINT_LISTS = st.one_of(
    st.lists(st.lists(COORDINATES, min_size=1, max_size=3), max_size=6),
    st.lists(st.tuples(st.integers(-50, 500), st.integers(-50, 500)).map(list), max_size=6),
    st.none(),
    st.text(max_size=3),
)


def _usable(points: Any, fewest: int) -> bool:
    """At least ``fewest`` points of two numbers each (whole, or finite fractions)."""

    def number(value: Any) -> bool:
        return type(value) is int or (type(value) is float and math.isfinite(value))

    return (
        isinstance(points, list)
        and len(points) >= fewest
        and all(isinstance(p, list) and len(p) == 2 and all(map(number, p)) for p in points)
    )


@settings(max_examples=150, deadline=None)
@given(
    size=st.tuples(st.integers(1, 400), st.integers(1, 400)),
    lines=st.lists(st.tuples(st.text(max_size=20), POINT_LISTS, POINT_LISTS), max_size=6),
    need_text=st.booleans(),
)
def test_any_stored_line_gives_valid_page_xml_or_is_left_out(
    page_schema: etree.XMLSchema, size: tuple[int, int], lines: list[tuple[str, Any, Any]], need_text: bool
) -> None:
    """Whatever the stored geometry and text (the OCR service's or a person's), the page's XML
    is valid PAGE with every point inside the page, or the line is not in it."""
    width, height = size
    row = dataset._PageRow(page_id=1, number=1, width=width, height=height)
    stored = [(i, text, baseline, polygon) for i, (text, baseline, polygon) in enumerate(lines)]
    xml, written = dataset._page_xml(row, stored, "p1.png", "2026-01-01T00:00:00+00:00", need_text=need_text)
    root = etree.fromstring(xml)
    page_schema.assertValid(root)
    found = list(root.iter(f"{PAGE}TextLine"))
    usable = sum(_usable(baseline, 2) and _usable(polygon, 3) for _, baseline, polygon in lines)
    assert len(found) == written
    assert written <= usable if need_text else written == usable
    for line in found:
        for element in (line.find(f"{PAGE}Coords"), line.find(f"{PAGE}Baseline")):
            points = [tuple(map(int, p.split(","))) for p in element.get("points").split()]
            assert all(0 <= x < width and 0 <= y < height for x, y in points)
        if need_text:
            assert (line.find(f"{PAGE}TextEquiv/{PAGE}Unicode").text or "").strip()


def test_the_zip_is_written_page_by_page_never_whole_in_memory(actors: Actors, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python's allocations (encoded images, XML, the ZIP's buffers) stay about one page's
    worth however many pages go in; Pillow's pixels live outside them, so every page image is
    checked to be closed before the next is rendered."""
    client, erika = actors.client, actors.archivist
    # Noise does not compress: each page's PNG is about as large as its pixels.
    frames = [Image.frombytes("RGB", (500, 500), random.Random(n).randbytes(500 * 500 * 3)) for n in range(6)]
    document_id = upload(client, erika, to_tiff(frames), "Rauschen")
    for number in range(1, 7):
        store_lines(client, document_id, number, [ocr_line(0, "x", [[5, 20], [50, 20]], [[5, 5], [50, 5], [50, 25]])])
        review(client, erika, document_id, number)
    rendered: list[Image.Image] = []
    render = dataset.render_ocr_page

    def tracked(*args: Any) -> Image.Image:
        for earlier in rendered:
            with pytest.raises(ValueError, match="closed"):
                earlier.getpixel((0, 0))
        image = render(*args)
        rendered.append(image)
        return image

    monkeypatch.setattr(dataset, "render_ocr_page", tracked)
    chosen = _eligible(actors, TrainingKind.RECOGNITION)
    with tempfile.TemporaryFile() as dest:
        tracemalloc.start()
        try:
            summary = _zip(actors, chosen, TrainingKind.RECOGNITION, dest)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        dest.seek(0)
        with zipfile.ZipFile(dest) as archive:
            sizes = [info.file_size for info in archive.infolist() if info.filename.endswith(".png")]
    assert summary.pages == len(rendered) == 6
    assert min(sizes) > 500_000
    assert peak < 2 * max(sizes), (peak, sizes)
    assert peak < sum(sizes) / 2


@pytest.mark.parametrize("code", [ErrorCode.DOCUMENT_TOO_COMPLEX, ErrorCode.CORRUPT_DOCUMENT, ErrorCode.PAGE_TOO_LARGE])
def test_a_page_the_backend_cannot_draw_is_left_out_not_the_whole_zip(
    actors: Actors, page_schema: etree.XMLSchema, monkeypatch: pytest.MonkeyPatch, code: ErrorCode
) -> None:
    """A page the OCR service read but the backend's renderer refuses (its own time and memory
    limits) would otherwise fail every run for good: it stays eligible and is chosen again."""
    client, erika = actors.client, actors.archivist
    frames = [Image.new("RGB", (300, 200), "white") for _ in range(3)]
    document_id = upload(client, erika, to_tiff(frames), "Drei Seiten")
    for number in (1, 2, 3):
        store_lines(client, document_id, number, [ocr_line(0, "x", [[5, 20], [50, 20]], [[5, 5], [50, 5], [50, 25]])])
        review(client, erika, document_id, number)
    render = dataset.render_ocr_page

    def refusing(source: Any, media_type: str, number: int, *args: Any) -> Image.Image:
        if number == 2:
            raise AppError(code, "Page 2 is refused.")
        return render(source, media_type, number, *args)

    monkeypatch.setattr(dataset, "render_ocr_page", refusing)
    chosen = _eligible(actors, TrainingKind.RECOGNITION)
    with tempfile.TemporaryFile() as dest:
        summary = _zip(actors, chosen, TrainingKind.RECOGNITION, dest)
        dest.seek(0)
        zipped = _unpacked(dest.read(), page_schema)
    kept = [page.page_id for page in chosen if page.page_number != 2]
    assert sorted(zipped) == sorted(kept) and (summary.pages, summary.lines) == (2, 2)


# --- the real OCR service takes it --------------------------------------------------------------------

TOKEN = "training-secret"


@pytest.fixture
def training_service(tmp_path: Path, service_factory: Any, tiny_model: Path) -> Iterator[str]:
    """An OCR service that trains (the tiny test model in its store as ``tiny``); its URL."""
    import shutil

    from tests.conftest import make_settings

    settings = make_settings(
        tmp_path / "models",
        training_dir=tmp_path / "training",
        training_token=TOKEN,
        training_threads=2,
        workers=1,
        segtrain_height=256,
    )
    settings.models_dir.mkdir(parents=True)
    shutil.copyfile(tiny_model, settings.models_dir / "tiny.safetensors")
    yield service_factory(settings, wait_healthy=False).url


def _trained_on(http: httpx.Client, job_id: str) -> dict[str, Any]:
    """The job once it has ended, checked to have read the data and trained an epoch on it. A
    new network on a dozen lines may well not learn to read in one epoch: the OCR service then
    fails the job for not converging, after the epoch, which is all this asks."""
    deadline = time.monotonic() + 400
    while True:
        job: dict[str, Any] = http.get(f"/train/jobs/{job_id}", headers={"X-Training-Token": TOKEN}).json()
        if job["status"] in ("DONE", "FAILED", "CANCELLED"):
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    assert [m["epoch"] for m in job["metrics"]][:1] == [1], job
    assert job["status"] == "DONE" or (job["status"] == "FAILED" and "did not converge" in job["error"]), job
    return job


@pytest.mark.slow
def test_the_ocr_service_trains_on_the_zip(actors: Actors, training_service: str) -> None:
    client, erika = actors.client, actors.archivist
    pages = [
        render_page(page_texts(seed, 4, words=3), width=640, height=400, font_size=28, margin=24)
        for seed in (11, 12, 13)
    ]
    ids = upload_page_images(client, erika, pages, "Brief", writer="Anna Müller")
    review(client, erika, ids[0])
    review(client, erika, ids[1])
    for i, line in enumerate(pages[2].lines):
        correct(client, erika, ids[2], i, line.text)
    services = services_of(client)
    with services.db.sessions() as session:
        writer_id = session.get_one(Document, ids[0]).writer_id
    chosen = _eligible(actors, TrainingKind.WRITER, writer_id)
    assert sum(p.lines for p in chosen) == 12

    with tempfile.TemporaryFile() as dest, httpx.Client(base_url=training_service, timeout=60) as http:
        summary = _zip(actors, chosen, TrainingKind.WRITER, dest)
        assert summary == ZipSummary(pages=3, lines=12)
        dest.seek(0)
        response = http.post(
            "/train",
            files={"file": ("data.zip", dest, "application/zip")},
            # A new network: the tiny base model reads bbox lines, and the OCR service refuses to
            # fine-tune it on baselines (which PAGE XML lines are).
            data={"modelName": "writer-anna-mueller-v1", "spec": TINY_SPEC, "epochs": "1"},
            headers={"X-Training-Token": TOKEN},
        )
        assert response.status_code == 202, response.text
        _trained_on(http, response.json()["jobId"])


@pytest.mark.slow
def test_the_ocr_service_takes_the_segmentation_zip(actors: Actors, training_service: str) -> None:
    client, erika = actors.client, actors.archivist
    pages = [
        render_page(page_texts(seed, 4, words=3), width=640, height=400, font_size=28, margin=24) for seed in (21, 22)
    ]
    for document_id in upload_page_images(client, erika, pages, "Seite"):
        review(client, erika, document_id)
    chosen = _eligible(actors, TrainingKind.SEGMENTATION)
    with tempfile.TemporaryFile() as dest, httpx.Client(base_url=training_service, timeout=60) as http:
        assert _zip(actors, chosen, TrainingKind.SEGMENTATION, dest) == ZipSummary(pages=2, lines=8)
        dest.seek(0)
        response = http.post(
            "/segtrain",
            files={"file": ("data.zip", dest, "application/zip")},
            data={"modelName": "archive-seg-v1", "epochs": "1", "spec": TINY_SEG_SPEC},
            headers={"X-Training-Token": TOKEN},
        )
        assert response.status_code == 202, response.text
        _trained_on(http, response.json()["jobId"])


# Convolutions only (as the OCR service's own segmentation tests): one epoch at 256 px is quick.
TINY_SEG_SPEC = "[1,256,0,3 Cr7,7,16,2,2 Gn8 Cr3,3,32,2,2 Gn8 Cr3,3,32 Gn8 Cr3,3,32 Gn8]"
