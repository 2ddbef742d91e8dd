"""DELETE /api/trash/{id}: an admin deletes a document in the trash for good, before its time —
its rows, its files and its search entries; nothing else, and nothing outside the trash."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import text

from tests.backend.conftest import BOTH_STORES, DATABASE_KIND, Actors, services_of
from tests.backend.documents import make_document
from tests.backend.search_support import correct, document, line_ids, search
from tests.backend.test_documents import stored_files, upload

# Every table holding rows of a document, and how to count one document's rows in it.
_ROWS_OF_A_DOCUMENT = {
    "pages": "SELECT count(*) FROM pages WHERE document_id = :d",
    "lines": "SELECT count(*) FROM lines JOIN pages ON pages.id = lines.page_id WHERE pages.document_id = :d",
    "line_corrections": "SELECT count(*) FROM line_corrections WHERE line_id IN (:first, :last)",
    "search_lines": "SELECT count(*) FROM search_lines WHERE document_id = :d",
    "ocr_jobs": "SELECT count(*) FROM ocr_jobs WHERE document_id = :d",
    "documents": "SELECT count(*) FROM documents WHERE id = :d",
}


def _rows(actors: Actors, document_id: int, lines: list[int]) -> dict[str, int]:
    services = services_of(actors.client)
    with services.db.engine.connect() as connection:
        values = {"d": document_id, "first": lines[0], "last": lines[-1]}
        return {table: connection.execute(text(sql), values).scalar_one() for table, sql in _ROWS_OF_A_DOCUMENT.items()}


@BOTH_STORES
def test_deleting_for_good_removes_the_rows_the_files_and_the_search_entries_of_that_document_only(
    actors: Actors,
) -> None:
    kept = document(actors, ["Gruss aus Wien"])
    gone = document(actors, ["Gruss aus Graz", "zweite Zeile"], ["Seite zwei"], title="Weg damit")
    neighbour = document(actors, ["Gruss aus Linz"])  # also in the trash, and stays there
    gone_lines, kept_lines = line_ids(actors, gone), line_ids(actors, kept)
    correct(actors, gone_lines[0], "Grüße aus Graz")
    for number in (1, 2):  # the rendered page images are files of the document too
        image = actors.client.get(f"/api/documents/{gone}/pages/{number}/image", headers=actors.archivist)
        assert image.status_code == 200, image.text
    job = actors.client.post(f"/api/documents/{gone}/ocr", headers=actors.archivist)
    assert job.status_code == 202, job.text
    files_before = stored_files(actors)
    before = _rows(actors, gone, gone_lines)
    assert all(before.values()), before  # the test sees every kind of row it expects gone
    for trashed in (gone, neighbour):
        assert actors.client.delete(f"/api/documents/{trashed}", headers=actors.archivist).status_code == 204

    response = actors.client.delete(f"/api/trash/{gone}", headers=actors.admin)

    assert response.status_code == 204 and response.content == b""
    assert _rows(actors, gone, gone_lines) == dict.fromkeys(_ROWS_OF_A_DOCUMENT, 0)
    assert [d["id"] for d in actors.client.get("/api/trash", headers=actors.admin).json()] == [neighbour]
    assert _rows(actors, kept, kept_lines)["lines"] == 1
    # The deleted document's five files (its original, each page's image and thumbnail), nothing else.
    removed = set(files_before) - set(stored_files(actors))
    assert len(removed) == 5 and set(stored_files(actors)) == set(files_before) - removed
    assert sum(key.startswith("originals/") for key in removed) == 1
    job_now = actors.client.get(f"/api/ocr/jobs/{job.json()['jobId']}", headers=actors.archivist)
    assert job_now.json()["code"] == "OCR_JOB_NOT_FOUND"
    restore = actors.client.post(f"/api/trash/{gone}/restore", headers=actors.admin)
    assert (restore.status_code, restore.json()["code"]) == (404, "DOCUMENT_NOT_FOUND")
    assert search(actors, "Graz")["total"] == 0
    assert [r["document"]["id"] for r in search(actors, "Gruss")["results"]] == [kept]
    if DATABASE_KIND == "sqlite":
        with services_of(actors.client).db.engine.connect() as connection:
            indexed = connection.execute(text("SELECT count(*) FROM search_fts")).scalar_one()
        assert indexed == 2  # the kept line and the trashed neighbour's, restorable with it
    restored = actors.client.post(f"/api/trash/{neighbour}/restore", headers=actors.admin)
    assert restored.status_code == 200
    assert [r["document"]["id"] for r in search(actors, "Linz")["results"]] == [neighbour]


def test_a_document_outside_the_trash_or_unknown_is_refused_and_kept(actors: Actors) -> None:
    status, body = upload(actors, make_document("png", 8101))
    assert status == 201
    live = body["id"]
    refused = actors.client.delete(f"/api/trash/{live}", headers=actors.admin)
    assert (refused.status_code, refused.json()["code"]) == (409, "NOT_IN_TRASH")
    assert actors.client.get(f"/api/documents/{live}", headers=actors.archivist).status_code == 200
    assert len(stored_files(actors)) == 1
    unknown = actors.client.delete(f"/api/trash/{live + 1000}", headers=actors.admin)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "DOCUMENT_NOT_FOUND")
    actors.client.delete(f"/api/documents/{live}", headers=actors.archivist)
    assert actors.client.delete(f"/api/trash/{live}", headers=actors.admin).status_code == 204
    again = actors.client.delete(f"/api/trash/{live}", headers=actors.admin)
    assert (again.status_code, again.json()["code"]) == (404, "DOCUMENT_NOT_FOUND")
    assert stored_files(actors) == []


@pytest.mark.parametrize("seed", range(4))
def test_random_trash_restore_and_delete_sequences_keep_list_trash_and_files_in_step(actors: Actors, seed: int) -> None:
    """A seeded sequence of moves against a model of where each document is (archive, trash, gone)."""
    rng = random.Random(seed)
    where: dict[int, str] = {}
    for n in range(4):
        status, body = upload(actors, make_document("png", 8200 + 10 * seed + n))
        assert status == 201
        where[body["id"]] = "archive"
    expected = {
        # (move, where the document is) -> (status, code or None, where it is afterwards)
        ("trash", "archive"): (204, None, "trash"),
        ("trash", "trash"): (404, "DOCUMENT_NOT_FOUND", "trash"),
        ("trash", "gone"): (404, "DOCUMENT_NOT_FOUND", "gone"),
        ("restore", "archive"): (409, "NOT_IN_TRASH", "archive"),
        ("restore", "trash"): (200, None, "archive"),
        ("restore", "gone"): (404, "DOCUMENT_NOT_FOUND", "gone"),
        ("delete", "archive"): (409, "NOT_IN_TRASH", "archive"),
        ("delete", "trash"): (204, None, "gone"),
        ("delete", "gone"): (404, "DOCUMENT_NOT_FOUND", "gone"),
    }
    for _ in range(14):
        document_id, move = rng.choice(sorted(where)), rng.choice(["trash", "restore", "delete"])
        if move == "trash":
            response = actors.client.delete(f"/api/documents/{document_id}", headers=actors.archivist)
        elif move == "restore":
            response = actors.client.post(f"/api/trash/{document_id}/restore", headers=actors.admin)
        else:
            response = actors.client.delete(f"/api/trash/{document_id}", headers=actors.admin)
        status, code, after = expected[(move, where[document_id])]
        assert response.status_code == status, (move, where[document_id], response.text)
        if code is not None:
            assert response.json()["code"] == code
        where[document_id] = after
        listed = {d["id"] for d in actors.client.get("/api/documents", headers=actors.archivist).json()["items"]}
        trash = {d["id"] for d in actors.client.get("/api/trash", headers=actors.admin).json()}
        assert listed == {d for d, place in where.items() if place == "archive"}
        assert trash == {d for d, place in where.items() if place == "trash"}
        assert len(stored_files(actors)) == sum(place != "gone" for place in where.values())
