"""Lines and corrections: the OCR's text stays, every save is history, stale saves get 409 LINE_CHANGED."""

from __future__ import annotations

import random
import threading

import pytest

from backend.documents.models import Line
from backend.errors import AppError
from backend.users.models import User
from tests.backend.conftest import Actors, FakeClock, services_of
from tests.backend.documents import make_document
from tests.backend.search_support import ocr_line


def _document_with_lines(actors: Actors, seed: int = 1, pages: int = 2, per_page: int = 3) -> int:
    response = actors.client.post(
        "/api/documents",
        headers=actors.archivist,
        files={"file": ("a.pdf", make_document("pdf", seed, pages=pages), "application/pdf")},
        data={"title": "Brief"},
    )
    document_id = int(response.json()["id"])
    services = services_of(actors.client)
    # Pages are stored last to first: the order of the lines must come from the page number.
    for number in range(pages, 0, -1):
        with services.db.sessions() as session:
            lines = [ocr_line(i, f"p{number} l{i}") for i in reversed(range(per_page))]
            services.lines.store_page(
                session, document_id, number, lines, model="kurrent", model_version="3", now=services.clock()
            )
    return document_id


def _lines(actors: Actors, document_id: int) -> list[dict]:
    response = actors.client.get(f"/api/documents/{document_id}/lines", headers=actors.archivist)
    assert response.status_code == 200
    return list(response.json())


def test_lines_come_in_reading_order_with_the_model_that_read_them(actors: Actors) -> None:
    lines = _lines(actors, _document_with_lines(actors))
    assert [line["ocrText"] for line in lines] == [f"p{p} l{i}" for p in (1, 2) for i in range(3)]
    assert all(line["currentText"] == line["ocrText"] and line["text"] is None for line in lines)
    assert {(line["modelName"], line["modelVersion"], line["version"]) for line in lines} == {("kurrent", "3", 1)}


def test_a_correction_keeps_the_ocr_text_and_its_history(actors: Actors, clock: FakeClock) -> None:
    line = _lines(actors, _document_with_lines(actors))[0]
    url = f"/api/lines/{line['id']}"
    first = actors.client.patch(url, headers=actors.archivist, json={"text": "Liebe Mutter", "version": 1}).json()
    clock.advance(60)
    second = actors.client.patch(url, headers=actors.admin, json={"text": "Liebe Mutter!", "version": 2}).json()
    assert (first["version"], second["version"]) == (2, 3)
    assert (second["ocrText"], second["text"], second["currentText"]) == ("p1 l0", "Liebe Mutter!", "Liebe Mutter!")
    history = actors.client.get(f"{url}/history", headers=actors.archivist).json()
    assert [(h["textBefore"], h["textAfter"], h["version"]) for h in history] == [
        ("p1 l0", "Liebe Mutter", 2),
        ("Liebe Mutter", "Liebe Mutter!", 3),
    ]
    assert history[1]["correctedAt"] > history[0]["correctedAt"]
    assert history[0]["userId"] != history[1]["userId"]


def test_a_stale_save_gets_409_with_the_current_text(actors: Actors) -> None:
    line = _lines(actors, _document_with_lines(actors))[1]
    url = f"/api/lines/{line['id']}"
    assert actors.client.patch(url, headers=actors.admin, json={"text": "zuerst", "version": 1}).status_code == 200
    late = actors.client.patch(url, headers=actors.archivist, json={"text": "später", "version": 1})
    assert late.status_code == 409
    assert late.json()["code"] == "LINE_CHANGED"
    assert (late.json()["details"]["text"], late.json()["details"]["version"]) == ("zuerst", 2)
    assert _lines(actors, _document_id(actors))[1]["currentText"] == "zuerst"


def _document_id(actors: Actors) -> int:
    return int(actors.client.get("/api/documents", headers=actors.archivist).json()["items"][0]["id"])


@pytest.mark.parametrize("seed", range(8))
def test_editors_with_random_views_never_overwrite_each_other(actors: Actors, seed: int) -> None:
    """Several editors save from the version they last saw; only saves from the current version win."""
    rng = random.Random(seed)
    line = _lines(actors, _document_with_lines(actors, seed=seed))[rng.randrange(6)]
    url = f"/api/lines/{line['id']}"
    seen = {"admin": 1, "archivist": 1}
    version, text, won = 1, line["ocrText"], []
    for step in range(25):
        who = rng.choice(list(seen))
        headers = actors.admin if who == "admin" else actors.archivist
        new_text = f"{who} {step} {'ä' * rng.randint(0, 3)}"
        response = actors.client.patch(url, headers=headers, json={"text": new_text, "version": seen[who]})
        if seen[who] == version:
            assert response.status_code == 200
            version, text = version + 1, new_text
            won.append(new_text)
        else:
            assert (response.status_code, response.json()["details"]["text"]) == (409, text)
        seen[who] = version if rng.random() < 0.6 else seen[who]
    history = actors.client.get(f"{url}/history", headers=actors.archivist).json()
    assert [h["textAfter"] for h in history] == won
    final = next(x for x in _lines(actors, _document_id(actors)) if x["id"] == line["id"])
    assert (final["ocrText"], final["currentText"], final["version"]) == (line["ocrText"], text, version)


def test_two_saves_racing_on_one_version_have_exactly_one_winner(actors: Actors) -> None:
    services = services_of(actors.client)
    line = _lines(actors, _document_with_lines(actors))[2]
    with services.db.sessions() as session:
        users = session.query(User).all()
    barrier = threading.Barrier(len(users) * 2)
    outcomes: list[str] = []

    def save(user: User, n: int) -> None:
        with services.db.sessions() as session:
            barrier.wait()
            try:
                services.lines.correct(session, line["id"], f"{user.username} {n}", 1, user, services.clock())
                outcomes.append("saved")
            except AppError as exc:
                outcomes.append(exc.code.value)

    threads = [threading.Thread(target=save, args=(u, n)) for u in users for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["LINE_CHANGED"] * 3 + ["saved"]
    with services.db.sessions() as session:
        assert session.get(Line, line["id"]).version == 2  # type: ignore[union-attr]


def test_lines_of_a_trashed_document_are_gone_until_restored(actors: Actors) -> None:
    document_id = _document_with_lines(actors)
    line = _lines(actors, document_id)[0]
    actors.client.delete(f"/api/documents/{document_id}", headers=actors.archivist)
    hidden = actors.client.patch(f"/api/lines/{line['id']}", headers=actors.archivist, json={"text": "x", "version": 1})
    assert (hidden.status_code, hidden.json()["code"]) == (404, "LINE_NOT_FOUND")
    listing = actors.client.get(f"/api/documents/{document_id}/lines", headers=actors.archivist)
    assert listing.json()["code"] == "DOCUMENT_NOT_FOUND"


def test_a_save_of_a_line_a_rerun_replaced_gets_409_with_the_new_reading(actors: Actors) -> None:
    document_id = _document_with_lines(actors, pages=1)
    seen = _lines(actors, document_id)  # the person's view: three uncorrected lines, version 1
    services = services_of(actors.client)
    with services.db.sessions() as session:
        # A re-run reads the page again while the person types: positions 0 and 1, no line 2.
        new = [ocr_line(0, "p1 l0"), ocr_line(1, "Liebe Mutter")]
        services.lines.store_page(
            session, document_id, 1, new, model="kurrent", model_version="4", now=services.clock()
        )
    changed = actors.client.patch(
        f"/api/lines/{seen[1]['id']}", headers=actors.archivist, json={"text": "Liebe Muter!", "version": 1}
    )
    assert (changed.status_code, changed.json()["code"]) == (409, "LINE_CHANGED"), changed.text
    assert (changed.json()["details"]["text"], changed.json()["details"]["version"]) == ("Liebe Mutter", 2)
    # The same text read again is no change: a save from the person's view goes through.
    same = actors.client.patch(
        f"/api/lines/{seen[0]['id']}", headers=actors.archivist, json={"text": "x", "version": 1}
    )
    assert same.status_code == 200, same.text
    # The position the new reading lacks has no line any more.
    gone = actors.client.patch(
        f"/api/lines/{seen[2]['id']}", headers=actors.archivist, json={"text": "y", "version": 1}
    )
    assert (gone.status_code, gone.json()["code"]) == (404, "LINE_NOT_FOUND")
    # Saved again from the text the 409 showed, it goes through.
    retried = actors.client.patch(
        f"/api/lines/{seen[1]['id']}", headers=actors.archivist, json={"text": "Liebe Mutter!", "version": 2}
    )
    assert retried.status_code == 200, retried.text
    after = _lines(actors, document_id)
    assert [(line["id"], line["ocrText"], line["currentText"]) for line in after] == [
        (seen[0]["id"], "p1 l0", "x"),
        (seen[1]["id"], "Liebe Mutter", "Liebe Mutter!"),
    ]


def test_the_lines_route_answers_each_line_as_a_save_does_and_documents_its_schema(actors: Actors) -> None:
    document_id = _document_with_lines(actors)
    line = _lines(actors, document_id)[4]
    saved = actors.client.patch(
        f"/api/lines/{line['id']}", headers=actors.archivist, json={"text": "Dein Sohn", "version": 1}
    ).json()
    listed = _lines(actors, document_id)
    assert listed[4] == saved  # every field, geometry and timestamps included
    assert listed[4]["baseline"] == [[10, 21], [90, 21]] and listed[4]["ocrConfidence"] == 0.8
    assert [line["currentText"] for line in listed] == ["p1 l0", "p1 l1", "p1 l2", "p2 l0", "Dein Sohn", "p2 l2"]
    schema = actors.client.app.openapi()["paths"]["/api/documents/{document_id}/lines"]["get"]  # type: ignore[attr-defined]
    body = schema["responses"]["200"]["content"]["application/json"]["schema"]
    assert body["type"] == "array" and body["items"]["$ref"].endswith("/LineOut")
