"""The document view as the server renders it: one page's lines (not the document's), each
polygon drawn, uncertain lines marked, a line named in the address selected only where it is
on the page shown."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from backend.documents.schemas import LineOut
from backend.web.viewer import UNCERTAIN_BELOW, line_view
from tests.backend.conftest import PASSWORD, Actors, services_of
from tests.backend.documents import make_document
from tests.backend.search_support import ocr_line

CONFIDENCES = [0.42, 0.97, None, UNCERTAIN_BELOW, 0.79]


def _document(actors: Actors) -> int:
    response = actors.client.post(
        "/api/documents",
        headers=actors.archivist,
        files={"file": ("a.pdf", make_document("pdf", 7, pages=2), "application/pdf")},
        data={"title": "Brief an Anna"},
    )
    assert response.status_code == 201, response.text
    document_id = int(response.json()["id"])
    services = services_of(actors.client)
    for number in (2, 1):
        lines = []
        for index, confidence in enumerate(CONFIDENCES):
            line = ocr_line(index, f"p{number} l{index}")
            line["confidence"] = confidence
            line["polygon"] = [[10 + index, 40 * index + 5], [300, 40 * index + 7], [300, 40 * index + 35]]
            lines.append(line)
        with services.db.sessions() as session:
            services.lines.store_page(
                session, document_id, number, lines, model="kurrent", model_version="1", now=services.clock()
            )
    return document_id


def _view(actors: Actors, url: str) -> str:
    actors.client.cookies.clear()
    login = actors.client.post("/api/auth/login", json={"username": "erika", "password": PASSWORD})
    assert login.status_code == 200, login.text
    response = actors.client.get(url, headers={"Accept": "text/html"})
    assert response.status_code == 200, response.text
    return response.text


def test_for_page_gives_that_page_s_lines_in_reading_order(actors: Actors) -> None:
    document_id = _document(actors)
    services = services_of(actors.client)
    with services.db.sessions() as session:
        document = services.documents.get(session, document_id)
        everything = services.lines.for_document(session, document)
        second = services.lines.for_page(session, document, 2)
        assert second == [line for line in everything if line.page == 2]
        assert [line.ocr_text for line in second] == [f"p2 l{i}" for i in range(len(CONFIDENCES))]
        assert services.lines.for_page(session, document, 3) == []


def test_the_view_draws_the_page_s_lines_and_marks_the_uncertain_ones_not_yet_corrected(actors: Actors) -> None:
    document_id = _document(actors)
    lines = actors.client.get(f"/api/documents/{document_id}/lines", headers=actors.archivist).json()
    on_two = [line for line in lines if line["page"] == 2]
    # A person corrected the first (uncertain) line: it is no longer where their time is needed.
    saved = actors.client.patch(
        f"/api/lines/{on_two[0]['id']}", headers=actors.archivist, json={"text": "Liebe Anna", "version": 1}
    )
    assert saved.status_code == 200
    html = _view(actors, f"/documents/{document_id}?page=2&line={on_two[4]['id']}")
    assert len(re.findall(r"<polygon ", html)) == len(CONFIDENCES)
    uncertain = re.findall(r'<li class="line[^"]*line--uncertain[^"]*" id="line-(\d+)"', html)
    assert uncertain == [str(on_two[4]["id"])]  # 0.79; not 0.8 itself, not None, not the corrected one
    assert re.search(rf'<li class="line[^"]*line--corrected[^"]*" id="line-{on_two[0]["id"]}"', html)
    assert ">Liebe Anna</textarea>" in html
    assert f'data-selected-line="{on_two[4]["id"]}"' in html
    # A line of another page named in the address is not selected here.
    on_one = next(line for line in lines if line["page"] == 1)
    assert "data-selected-line" not in _view(actors, f"/documents/{document_id}?page=2&line={on_one['id']}")


def test_a_line_s_text_is_escaped_in_the_page(actors: Actors) -> None:
    document_id = _document(actors)
    line = actors.client.get(f"/api/documents/{document_id}/lines", headers=actors.archivist).json()[0]
    hostile = "</textarea><script>alert(1)</script>"
    saved = actors.client.patch(
        f"/api/lines/{line['id']}", headers=actors.archivist, json={"text": hostile, "version": 1}
    )
    assert saved.status_code == 200
    html = _view(actors, f"/documents/{document_id}")
    assert "<script>alert(1)" not in html
    assert "&lt;/textarea&gt;&lt;script&gt;alert(1)&lt;/script&gt;</textarea>" in html


def _line(polygon: list[Any], baseline: list[Any]) -> LineOut:
    return LineOut(
        id=1, page=1, order_index=0, baseline=baseline, polygon=polygon, ocr_text="x", ocr_confidence=0.5, text=None,
        current_text="x", corrected_by=None, corrected_at=datetime.now(UTC), model_name=None, model_version=None,
        model=None, model_label=None, version=1,
    )  # fmt: skip


def _points(rng: random.Random) -> list[Any]:
    def coordinate() -> float:
        return rng.choice([rng.randint(-50, 5000), rng.uniform(-50.0, 5000.0)])

    return [[coordinate(), coordinate()] for _ in range(rng.randint(0, 8))]


@pytest.mark.parametrize("seed", range(200))
def test_a_line_s_box_holds_its_outline_whatever_the_stored_points(seed: int) -> None:
    rng = random.Random(seed)
    polygon, baseline = _points(rng), _points(rng)
    junk = rng.sample([None, "x", 3, [1], [1, "a"], {"x": 1}, [[1, 2]]], rng.randint(0, 3))
    view = line_view(_line(polygon + junk, baseline), 1)
    left, top, width, height = view.box
    assert width >= 1 and height >= 1
    for x, y in polygon or baseline:
        assert left <= x <= left + width and top <= y <= top + height
    drawn = [tuple(float(v) for v in pair.split(",")) for pair in view.points.split()]
    assert drawn == [pytest.approx((x, y), abs=0.006) for x, y in polygon]


def _document_of_lines(actors: Actors, counts: list[int]) -> int:
    """A document whose page n has counts[n - 1] lines."""
    response = actors.client.post(
        "/api/documents",
        headers=actors.archivist,
        files={"file": ("b.pdf", make_document("pdf", 8, pages=len(counts)), "application/pdf")},
        data={"title": "Zettel"},
    )
    assert response.status_code == 201, response.text
    document_id = int(response.json()["id"])
    services = services_of(actors.client)
    for number, count in enumerate(counts, 1):
        lines = [ocr_line(index, f"p{number} l{index}") for index in range(count)]
        with services.db.sessions() as session:
            services.lines.store_page(
                session, document_id, number, lines, model="kurrent", model_version="1", now=services.clock()
            )
    return document_id


@pytest.mark.parametrize(
    ("language", "one", "two", "forms"),
    [
        ("de", "0 von 1 Zeile korrigiert", "0 von 2 Zeilen korrigiert", {"one": "{corrected} von {total} Zeile"}),
        ("en", "0 of 1 line corrected", "0 of 2 lines corrected", {"one": "{corrected} of {total} line corrected"}),
        ("es", "0 de 1 línea corregida", "0 de 2 líneas corregidas", {"many": "{corrected} de {total} líneas"}),
    ],
)
def test_the_lines_summary_says_one_line_in_the_singular_and_its_script_gets_every_form(
    actors: Actors, language: str, one: str, two: str, forms: dict[str, str]
) -> None:
    document_id = _document_of_lines(actors, [1, 2])
    actors.client.cookies.clear()
    login = actors.client.post("/api/auth/login", json={"username": "erika", "password": PASSWORD})
    assert login.status_code == 200, login.text
    actors.client.cookies.set("archiv_lang", language)
    said = {}
    for page in (1, 2):
        response = actors.client.get(f"/documents/{document_id}?page={page}", headers={"Accept": "text/html"})
        assert response.status_code == 200, response.text
        summary = re.search(r'<p class="lines-summary" id="lines-summary">([^<]*)</p>', response.text)
        assert summary, response.text
        said[page] = summary.group(1)
    assert said[1].startswith(one + ", ") and said[2].startswith(two + ", ")
    messages = re.search(r'<script type="application/json" id="page-messages">([^<]*)</script>', response.text)
    assert messages
    summary_forms = json.loads(messages.group(1))["summary"]
    for category, start in forms.items():
        assert summary_forms[category].startswith(start), summary_forms
