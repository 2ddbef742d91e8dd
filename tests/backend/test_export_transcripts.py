"""``transcript_of`` against generated database rows: whatever a line's stored geometry holds
(points past the page, floats, NaN, malformed JSON) and whatever its text, the transcript has
whole pixels inside the page and the current text, and its PAGE XML and ALTO are valid."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from sqlalchemy import delete

from backend.db import Database
from backend.documents.models import Document, DocumentStatus, Line, Page, Writer
from backend.exports.service import transcript_of
from backend.transcripts.alto import alto_xml
from backend.transcripts.page_xml import page_xml
from backend.transcripts.text import clean_text
from backend.users.models import Role, User

SCHEMAS = Path(__file__).parents[1] / "schemas"
PAGE = "{http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15}"
DB_FUZZ = settings(
    max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
UNIQUE = itertools.count(1)

# What either database stores as text: no NUL (PostgreSQL refuses it) and no lone surrogates.
_text = st.text(
    alphabet=st.sampled_from("aeß ſꝛ\u0308שלום&<>\x01\x1f\t\n")
    | st.characters(codec="utf-8", exclude_characters="\x00"),
    max_size=20,
)
_number = st.integers(-100, 500) | st.floats(-100, 500) | st.just("7") | st.none()
_geometry = st.lists(st.lists(_number, min_size=2, max_size=2), max_size=5) | st.just({"x": 1}) | st.just([[1, 2, 3]])


@st.composite
def stored_lines(draw: Any) -> list[tuple[Any, Any, str, str | None, float | None]]:
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        ocr_text = draw(_text)
        text = draw(st.none() | _text | st.just(ocr_text))
        lines.append((draw(_geometry), draw(_geometry), ocr_text, text, draw(st.none() | st.floats(0, 1))))
    return lines


@pytest.fixture(scope="module")
def schemas() -> tuple[etree.XMLSchema, etree.XMLSchema]:
    return (
        etree.XMLSchema(etree.parse(SCHEMAS / "pagecontent.xsd")),
        etree.XMLSchema(etree.parse(SCHEMAS / "alto-4-3.xsd")),
    )


def _store(database: Database, pages: list[list[tuple[Any, Any, str, str | None, float | None]]]) -> int:
    with database.engine.begin() as connection:
        for table in (Line, Page, Document, Writer, User):
            connection.execute(delete(table))
    n = next(UNIQUE)
    with database.sessions() as session:
        user = User(username="erika", password_hash="x", role=Role.ARCHIVIST, created_at=NOW)
        writer = Writer(name="Anna Müller", slug="anna-mueller", created_at=NOW)
        session.add_all([user, writer])
        session.flush()
        document = Document(
            title="Brief",
            title_folded="brief",
            writer_id=writer.id,
            media_type="application/pdf",
            storage_key=f"k{n}",
            sha256=f"{n:064d}",
            size_bytes=1,
            page_count=len(pages),
            status=DocumentStatus.DONE,
            created_by=user.id,
            created_at=NOW,
        )
        session.add(document)
        session.flush()
        for number, lines in enumerate(pages, start=1):
            page = Page(document_id=document.id, number=number, width=120 + number, height=80)
            session.add(page)
            session.flush()
            session.add_all(
                Line(
                    page_id=page.id,
                    order_index=i,
                    baseline=baseline,
                    polygon=polygon,
                    ocr_text=ocr_text,
                    ocr_confidence=confidence,
                    text=text,
                    corrected_by=user.id if text is not None else None,
                    corrected_at=NOW if text is not None else None,
                )
                for i, (baseline, polygon, ocr_text, text, confidence) in enumerate(lines)
            )
        session.commit()
        return document.id


@DB_FUZZ
@given(pages=st.lists(stored_lines(), min_size=1, max_size=3))
def test_any_stored_lines_give_a_transcript_inside_the_page_and_valid_xml(
    db: Database, schemas: tuple[etree.XMLSchema, etree.XMLSchema], pages: list[Any]
) -> None:
    document_id = _store(db, pages)
    with db.sessions() as session:
        document = session.get(Document, document_id)
        assert document is not None
        transcript = transcript_of(session, document)
    assert transcript.writer == "Anna Müller"
    assert [page.number for page in transcript.pages] == list(range(1, len(pages) + 1))
    for page, stored in zip(transcript.pages, pages, strict=True):
        assert page.image_name == f"{page.number:04d}.png"
        assert [line.text for line in page.lines] == [
            text if text is not None else ocr for _, _, ocr, text, _ in stored
        ]
        assert [line.ocr_text for line in page.lines] == [
            ocr if text is not None and text != ocr else None for _, _, ocr, text, _ in stored
        ]
        for line in page.lines:
            for x, y in line.baseline + line.polygon:
                assert isinstance(x, int) and isinstance(y, int)
                assert 0 <= x < page.width and 0 <= y < page.height
        root = etree.fromstring(page_xml(transcript, page))
        schemas[0].assertValid(root)
        assert [e.findtext(f"{PAGE}Unicode") or "" for e in root.iter(f"{PAGE}TextEquiv") if e.get("index") == "0"] == [
            clean_text(line.text) for line in page.lines
        ]
        schemas[1].assertValid(etree.fromstring(alto_xml(transcript, page)))
