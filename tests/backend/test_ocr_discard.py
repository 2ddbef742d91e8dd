"""Re-running OCR with discardCorrections: the fresh reading replaces every line, and nothing a person
typed is lost silently (each dropped correction is archived with its history; the job counts them)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from backend.documents.models import DiscardedCorrection, Line, LineCorrection, Page
from backend.ocr.models import OcrBatch, OcrJob
from backend.users.models import Role
from tests.backend.conftest import Actors, add_user, bearer, services_of
from tests.backend.ocr_jobs import drain, page_events, runner, upload
from tests.backend.ocr_standin import Drip, StandIn, start_standin

STREAM = "POST /ocr/stream"


@pytest.fixture
def standin() -> Iterator[StandIn]:
    server = start_standin()
    yield server
    server.stop()


def _lines(actors: Actors, document_id: int) -> list[dict[str, Any]]:
    return list(actors.client.get(f"/api/documents/{document_id}/lines", headers=actors.archivist).json())


def _correct(actors: Actors, line: dict[str, Any], text: str, version: int) -> None:
    saved = actors.client.patch(
        f"/api/lines/{line['id']}", headers=actors.archivist, json={"text": text, "version": version}
    )
    assert saved.status_code == 200, saved.text


def _user_id(actors: Actors, headers: dict[str, str]) -> int:
    return int(actors.client.get("/api/auth/me", headers=headers).json()["id"])


def test_a_rerun_discarding_corrections_reads_afresh_and_archives_each_correction(
    actors: Actors, standin: StandIn
) -> None:
    document_id = upload(actors, 1, pages=2)  # uploaded by the archivist, who may discard
    standin.service.plan(STREAM, Drip(page_events(2, 3)), Drip(page_events(2, 2, tag="new ")))
    actors.client.post(f"/api/documents/{document_id}/ocr", headers=actors.archivist)
    drain(runner(actors.client, standin.url))
    before = _lines(actors, document_id)
    _correct(actors, before[0], "Liebe Muter", 1)
    _correct(actors, before[0], "Liebe Mutter", 2)
    _correct(actors, before[5], "Dein Sohn", 1)  # page 2, third line: the new reading has none there

    started = actors.client.post(
        f"/api/documents/{document_id}/ocr", headers=actors.archivist, json={"discardCorrections": True}
    )
    assert started.status_code == 202, started.text
    job_id = started.json()["jobId"]
    drain(runner(actors.client, standin.url))

    after = _lines(actors, document_id)
    got = [(line["page"], line["orderIndex"], line["ocrText"], line["text"]) for line in after]
    assert got == [(p, i, f"new p{p} l{i}", None) for p in (1, 2) for i in (0, 1)]
    job = actors.client.get(f"/api/ocr/jobs/{job_id}", headers=actors.archivist).json()
    assert (job["status"], job["discardCorrections"], job["correctionsDiscarded"]) == ("DONE", True, 2)

    # The line at a position the new reading has keeps its id and its history, and one more
    # history row says who dropped which text.
    erika = _user_id(actors, actors.archivist)
    assert (after[0]["id"], after[0]["version"]) == (before[0]["id"], 4)
    history = actors.client.get(f"/api/lines/{after[0]['id']}/history", headers=actors.archivist).json()
    assert [(h["textBefore"], h["textAfter"], h["userId"], h["version"]) for h in history] == [
        ("p1 l0", "Liebe Muter", erika, 2),
        ("Liebe Muter", "Liebe Mutter", erika, 3),
        ("Liebe Mutter", "new p1 l0", erika, 4),
    ]
    # Both dropped corrections are archived with their whole history, the gone line's too.
    archived = actors.client.get(f"/api/documents/{document_id}/discarded-corrections", headers=actors.archivist).json()
    summary = [
        (a["page"], a["orderIndex"], a["lineId"], a["ocrText"], a["text"], a["version"], a["jobId"], a["discardedBy"])
        for a in archived
    ]
    assert sorted(summary) == [
        (1, 0, before[0]["id"], "p1 l0", "Liebe Mutter", 3, job_id, erika),
        (2, 2, before[5]["id"], "p2 l2", "Dein Sohn", 2, job_id, erika),
    ]
    gone = next(a for a in archived if a["page"] == 2)
    assert [(h["textBefore"], h["textAfter"]) for h in gone["history"]] == [("p2 l2", "Dein Sohn")]
    assert gone["correctedBy"] == erika and gone["correctedAt"] is not None


def test_only_an_admin_or_the_uploader_may_discard_corrections(actors: Actors) -> None:
    add_user(actors.client, "otto", Role.ARCHIVIST)
    otto = bearer(actors.client, "otto")
    erikas = upload(actors, 2, pages=1)
    ottos = upload(Actors(actors.client, actors.admin, otto), 3, pages=1)
    for url, body in (
        (f"/api/documents/{erikas}/ocr", {"discardCorrections": True}),
        ("/api/ocr/batches", {"documentIds": [ottos, erikas], "discardCorrections": True}),
    ):
        response = actors.client.post(url, headers=otto, json=body)
        assert (response.status_code, response.json()["code"]) == (403, "FORBIDDEN"), response.text
        assert response.json()["details"] == {"documentIds": [erikas]}
    services = services_of(actors.client)
    with services.db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(OcrJob)) == 0
        assert session.scalar(select(func.count()).select_from(OcrBatch)) == 0
    # Keeping the corrections is anyone's to ask; discarding them is the uploader's or an admin's.
    assert actors.client.post(f"/api/documents/{erikas}/ocr", headers=otto).status_code == 202
    batch = actors.client.post(
        "/api/ocr/batches", headers=actors.admin, json={"documentIds": [ottos], "discardCorrections": True}
    )
    assert batch.status_code == 202, batch.text


@pytest.mark.parametrize("value", ["yes", 1, 0, None, "true", [True], {"x": 1}])
def test_discard_corrections_must_be_a_json_boolean(actors: Actors, value: Any) -> None:
    document_id = upload(actors, 4, pages=1)
    for url, body in (
        (f"/api/documents/{document_id}/ocr", {"discardCorrections": value}),
        ("/api/ocr/batches", {"documentIds": [document_id], "discardCorrections": value}),
        ("/api/ocr/batches/1/retry", {"includeCancelled": value}),
    ):
        response = actors.client.post(url, headers=actors.admin, json=body)
        assert (response.status_code, response.json()["code"]) == (422, "INVALID_REQUEST"), (url, value)


def _reading(rng: random.Random, tag: str) -> list[dict[str, Any]]:
    positions = rng.sample(range(12), rng.randint(0, 8))
    return [
        {"index": i, "text": f"{tag}{i}", "confidence": 0.5, "baseline": [[0, i]], "polygon": [[0, 0]]}
        for i in positions
    ]


@pytest.mark.parametrize("seed", range(4))
def test_discarding_leaves_exactly_the_new_reading_and_archives_every_correction(actors: Actors, seed: int) -> None:
    services = services_of(actors.client)
    admin = _user_id(actors, actors.admin)
    document_id = upload(actors, 500 + seed, pages=1)
    with services.db.sessions() as session:
        page_id = session.scalars(select(Page.id).where(Page.document_id == document_id)).one()
    rng = random.Random(seed)
    for variant in range(40):
        with services.db.sessions() as session:
            session.execute(delete(Line).where(Line.page_id == page_id).execution_options(synchronize_session="fetch"))
            session.execute(delete(DiscardedCorrection))
            services.lines.replace_page(
                session, document_id, 1, _reading(rng, "old"), model="m", model_version=None, now=services.clock()
            )
            session.commit()
            lines = session.scalars(select(Line).where(Line.page_id == page_id)).all()
            corrected = {line.order_index: (line.id, f"person {variant} {line.order_index}") for line in lines}
            corrected = {i: c for i, c in corrected.items() if rng.random() < 0.5}
            for line in lines:
                if line.order_index in corrected:
                    line.text, line.version, line.corrected_by = corrected[line.order_index][1], 2, admin
                    session.add(
                        LineCorrection(
                            line_id=line.id,
                            user_id=admin,
                            corrected_at=services.clock(),
                            text_before=line.ocr_text,
                            text_after=line.text,
                            version=2,
                        )
                    )
            session.commit()
            new = _reading(rng, "new")
            count = services.lines.replace_page(
                session,
                document_id,
                1,
                new,
                model="m2",
                model_version="2",
                now=services.clock(),
                discard_by=admin,
                job_id=7,
            )
            session.commit()
            after = {line.order_index: line for line in session.scalars(select(Line).where(Line.page_id == page_id))}
            archived = {row.order_index: row for row in session.scalars(select(DiscardedCorrection))}
        new_positions = {item["index"] for item in new}
        assert count == len(corrected), variant
        # The document holds the new reading and nothing else, no person's text left.
        assert set(after) == new_positions, variant
        for index, line in after.items():
            assert (line.ocr_text, line.text, line.model_name) == (f"new{index}", None, "m2")
            assert line.version == (3 if index in corrected else 1)
            if index in corrected:
                assert line.id == corrected[index][0]
        # Every correction is archived with its text, its history and who dropped it.
        assert set(archived) == set(corrected), variant
        for index, row in archived.items():
            assert (row.line_id, row.text, row.discarded_by, row.job_id) == (*corrected[index], admin, 7)
            assert [(h["textBefore"], h["textAfter"]) for h in row.history] == [(f"old{index}", corrected[index][1])]
