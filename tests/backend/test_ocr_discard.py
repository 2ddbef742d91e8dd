"""Re-running OCR with discardCorrections: the fresh reading replaces every line, and nothing a person
typed is lost silently (each dropped correction is archived with its history; the job counts them)."""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select, text, update

from backend.db import Database
from backend.documents.models import DiscardedCorrection, Line, LineCorrection, Page
from backend.ocr.models import OcrBatch, OcrJob
from backend.ocr.queue import JobQueue
from backend.users.models import Role
from tests.backend.conftest import Actors, add_user, bearer, services_of
from tests.backend.ocr_jobs import LEASE, drain, page_events, runner, upload
from tests.backend.ocr_standin import Drip, StandIn

STREAM = "POST /ocr/stream"


def _lines(actors: Actors, document_id: int) -> list[dict[str, Any]]:
    return list(actors.client.get(f"/api/documents/{document_id}/lines", headers=actors.archivist).json())


def _correct(actors: Actors, line: dict[str, Any], text: str, version: int) -> None:
    saved = actors.client.patch(
        f"/api/lines/{line['id']}", headers=actors.archivist, json={"text": text, "version": version}
    )
    assert saved.status_code == 200, saved.text


def _discarded(actors: Actors, document_id: int) -> list[dict[str, Any]]:
    page = actors.client.get(f"/api/documents/{document_id}/discarded-corrections", headers=actors.archivist).json()
    assert page["nextCursor"] is None
    return list(page["items"])


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
    archived = _discarded(actors, document_id)
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
            old_positions = {line.order_index: line.id for line in lines}
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
            # An old line at a new position is the same line, its version raised with its text.
            assert line.version == (3 if index in corrected else 2 if index in old_positions else 1)
            if index in old_positions:
                assert line.id == old_positions[index]
        # Every correction is archived with its text, its history and who dropped it.
        assert set(archived) == set(corrected), variant
        for index, row in archived.items():
            assert (row.line_id, row.text, row.discarded_by, row.job_id) == (*corrected[index], admin, 7)
            assert [(h["textBefore"], h["textAfter"]) for h in row.history] == [(f"old{index}", corrected[index][1])]


def _waiting_on_a_lock(database: Database) -> bool:
    with database.engine.connect() as connection:
        waiting = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return bool(waiting)


@pytest.mark.timeout(120)
def test_a_correction_saved_while_a_discarding_rerun_stores_its_page_is_archived_not_lost(
    actors: Actors, clock: Any
) -> None:
    """The person's save commits while the page's transaction is under way: the archive must hold
    that newest text (not the one before it), the history one row per version."""
    services = services_of(actors.client)
    document_id = upload(actors, 60, pages=1)
    with services.db.sessions() as session:
        old = [e for e in page_events(1, 2) if e["type"] == "line"]
        services.lines.replace_page(session, document_id, 1, old, model="m", model_version=None, now=clock())
        session.commit()
    line = _lines(actors, document_id)[0]
    _correct(actors, line, "Liebe Muter", 1)
    started = actors.client.post(
        f"/api/documents/{document_id}/ocr", headers=actors.archivist, json={"discardCorrections": True}
    )
    assert started.status_code == 202, started.text
    queue = JobQueue(services.db, services.lines, "runner", LEASE)
    [claimed] = queue.claim(1, clock())
    erika = _user_id(actors, actors.archivist)
    new = [e for e in page_events(1, 2, tag="new ") if e["type"] == "line"]
    # The person's second save, as Lines.correct makes it, held open across the runner's page.
    with services.db.engine.connect() as person:
        saving = person.begin()
        saved = person.execute(
            update(Line)
            .where(Line.id == line["id"], Line.version == 2)
            .values(text="Liebe Mutter", corrected_by=erika, corrected_at=clock(), version=3)
        )
        assert saved.rowcount == 1
        person.execute(
            insert(LineCorrection).values(
                line_id=line["id"],
                user_id=erika,
                corrected_at=clock(),
                text_before="Liebe Muter",
                text_after="Liebe Mutter",
                version=3,
            )
        )
        with ThreadPoolExecutor(1) as pool:
            storing = pool.submit(queue.store_page, claimed, 1, new, model="m2", model_version=None, now=clock())
            if services.db.engine.dialect.name == "postgresql":
                # Let the page's transaction run up to the person's row before the save commits
                # (on SQLite it waits for the write lock from its first statement).
                while not _waiting_on_a_lock(services.db):
                    time.sleep(0.01)
            saving.commit()
            storing.result()
    archived = _discarded(actors, document_id)
    assert [(a["text"], a["version"]) for a in archived] == [("Liebe Mutter", 3)]
    assert [h["textAfter"] for h in archived[0]["history"]] == ["Liebe Muter", "Liebe Mutter"]
    history = actors.client.get(f"/api/lines/{line['id']}/history", headers=actors.archivist).json()
    assert [(h["textAfter"], h["version"]) for h in history] == [
        ("Liebe Muter", 2),
        ("Liebe Mutter", 3),
        ("new p1 l0", 4),
    ]
    after = _lines(actors, document_id)[0]
    assert (after["text"], after["ocrText"], after["version"]) == (None, "new p1 l0", 4)


def test_retrying_a_batch_that_discards_corrections_is_the_uploaders_or_an_admins_to_ask(actors: Actors) -> None:
    # Retrying re-runs the discard on what people have corrected since: the same right as starting it.
    add_user(actors.client, "otto", Role.ARCHIVIST)
    otto = bearer(actors.client, "otto")
    erikas = upload(actors, 70, pages=1)
    batch = actors.client.post(
        "/api/ocr/batches", headers=actors.archivist, json={"documentIds": [erikas], "discardCorrections": True}
    )
    batch_id = batch.json()["batchId"]
    assert actors.client.post(f"/api/ocr/batches/{batch_id}/cancel", headers=otto).status_code == 200
    for body in ({"includeCancelled": True}, None):
        refused = actors.client.post(f"/api/ocr/batches/{batch_id}/retry", headers=otto, json=body)
        if body is None:  # nothing FAILED: nothing to re-queue, so nothing to refuse
            assert refused.json()["requeued"] == []
            continue
        assert (refused.status_code, refused.json()["code"]) == (403, "FORBIDDEN"), refused.text
        assert refused.json()["details"] == {"documentIds": [erikas]}
    with services_of(actors.client).db.sessions() as session:
        assert session.scalars(select(OcrJob.status)).all() == ["CANCELLED"]
    for allowed in (actors.archivist, actors.admin):
        again = actors.client.post(
            f"/api/ocr/batches/{batch_id}/retry", headers=allowed, json={"includeCancelled": True}
        )
        assert again.status_code == 202 and len(again.json()["requeued"]) == 1, again.text
        actors.client.post(f"/api/ocr/batches/{batch_id}/cancel", headers=allowed)


def test_discarded_corrections_are_paged_newest_first(actors: Actors) -> None:
    erika = _user_id(actors, actors.archivist)
    ours, other = upload(actors, 4, pages=1), upload(actors, 5, pages=1)
    services = services_of(actors.client)
    now = services.clock()
    with services.db.session() as session:
        for n, document_id in enumerate([ours, other, ours, ours, other, ours, ours]):
            session.add(
                DiscardedCorrection(
                    document_id=document_id,
                    page_number=1,
                    order_index=n,
                    line_id=1000 + n,
                    ocr_text=f"ocr {n}",
                    text=f"person {n}",
                    corrected_by=erika,
                    corrected_at=now,
                    version=2,
                    history=[],
                    discarded_by=erika,
                    discarded_at=now,
                    job_id=None,
                )
            )
    url = f"/api/documents/{ours}/discarded-corrections"
    pages: list[list[int]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor is not None else {})
        page = actors.client.get(url, headers=actors.archivist, params=params).json()
        pages.append([item["orderIndex"] for item in page["items"]])
        cursor = page["nextCursor"]
        if cursor is None:
            break
        assert len(pages) < 10, "the pages never end"
    assert pages == [[6, 5], [3, 2], [0]]
    assert [a["orderIndex"] for a in actors.client.get(url, headers=actors.archivist).json()["items"]] == [
        6,
        5,
        3,
        2,
        0,
    ]
    for bad in ({"limit": 0}, {"limit": 201}, {"cursor": "0"}, {"cursor": "-1"}, {"cursor": "x"}):
        refused = actors.client.get(url, headers=actors.archivist, params=bad)
        assert (refused.status_code, refused.json()["code"]) == (422, "INVALID_REQUEST"), bad
