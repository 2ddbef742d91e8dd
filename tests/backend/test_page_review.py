"""Marking a page reviewed (its lines are ground truth as they stand), and taking it back."""

from __future__ import annotations

from backend.training.dataset import eligible_pages, ground_truth
from backend.training.models import TrainingKind
from tests.backend.conftest import Actors, FakeClock, services_of
from tests.backend.documents import make_document
from tests.backend.ground_truth import correct, ocr_line, review, store_lines, upload

BOX = [[10, 10], [90, 10], [90, 30], [10, 30]]


def _document(actors: Actors, seed: int = 1, pages: int = 2) -> int:
    """A PDF of ``pages`` pages; page 1 read by OCR (three lines), the others not yet."""
    document_id = upload(actors.client, actors.archivist, make_document("pdf", seed, pages=pages), "Brief")
    lines = [ocr_line(i, f"zeile {i}", [[10, 25 + 30 * i], [90, 25 + 30 * i]], BOX) for i in range(3)]
    store_lines(actors.client, document_id, 1, lines)
    return document_id


def _pages(actors: Actors, document_id: int, headers: dict[str, str] | None = None) -> list[dict]:
    response = actors.client.get(f"/api/documents/{document_id}/pages", headers=headers or actors.archivist)
    assert response.status_code == 200, response.text
    return list(response.json())


def _user_id(actors: Actors, headers: dict[str, str]) -> int:
    user_id: int = actors.client.get("/api/auth/me", headers=headers).json()["id"]
    return user_id


def _recognition_lines(actors: Actors) -> dict[int, int]:
    services = services_of(actors.client)
    with services.db.sessions() as session:
        return {page.page_id: page.lines for page in eligible_pages(session, TrainingKind.RECOGNITION)}


def test_a_page_marked_reviewed_shows_who_and_when_and_its_lines_become_ground_truth(
    actors: Actors, clock: FakeClock
) -> None:
    document_id = _document(actors)
    assert [(p["reviewed"], p["reviewedAt"], p["reviewedBy"]) for p in _pages(actors, document_id)] == [
        (False, None, None),
        (False, None, None),
    ]
    assert _recognition_lines(actors) == {}

    page = review(actors.client, actors.archivist, document_id)
    assert (page["number"], page["reviewed"], page["reviewedBy"]) == (1, True, _user_id(actors, actors.archivist))
    assert page["reviewedAt"].startswith("2026-01-01T00:00:00")
    listed = _pages(actors, document_id)
    assert listed[0] == page
    assert listed[1]["reviewed"] is False
    assert list(_recognition_lines(actors).values()) == [3]


def test_reviewing_again_keeps_the_first_review(actors: Actors, clock: FakeClock) -> None:
    document_id = _document(actors)
    first = review(actors.client, actors.archivist, document_id)
    clock.advance(3600)
    again = review(actors.client, actors.admin, document_id)
    assert again == first


def test_taking_a_review_back_leaves_only_the_corrected_lines(actors: Actors) -> None:
    document_id = _document(actors)
    correct(actors.client, actors.archivist, document_id, 1, "Zeile eins")
    review(actors.client, actors.archivist, document_id)
    assert list(_recognition_lines(actors).values()) == [3]
    for _ in range(2):  # taking back a page not reviewed is no error
        response = actors.client.delete(f"/api/documents/{document_id}/pages/1/review", headers=actors.admin)
        assert response.status_code == 200, response.text
        assert (response.json()["reviewed"], response.json()["reviewedAt"], response.json()["reviewedBy"]) == (
            False,
            None,
            None,
        )
    assert list(_recognition_lines(actors).values()) == [1]
    assert _pages(actors, document_id)[0]["reviewed"] is False


def test_a_page_without_lines_cannot_be_reviewed(actors: Actors) -> None:
    document_id = _document(actors)
    response = actors.client.put(f"/api/documents/{document_id}/pages/2/review", headers=actors.archivist)
    assert response.status_code == 422
    assert response.json()["code"] == "PAGE_HAS_NO_LINES"
    assert _pages(actors, document_id)[1]["reviewed"] is False


def test_unknown_documents_and_pages_are_404(actors: Actors) -> None:
    document_id = _document(actors)
    for method in ("PUT", "DELETE"):
        for path, code in (
            (f"/api/documents/{document_id + 1}/pages/1/review", "DOCUMENT_NOT_FOUND"),
            (f"/api/documents/{document_id}/pages/3/review", "PAGE_NOT_FOUND"),
        ):
            response = actors.client.request(method, path, headers=actors.archivist)
            assert response.status_code == 404, response.text
            assert response.json()["code"] == code
        for path in ("/api/documents/0/pages/1/review", f"/api/documents/{document_id}/pages/0/review"):
            assert actors.client.request(method, path, headers=actors.archivist).status_code == 422


def test_a_document_in_the_trash_cannot_be_reviewed_and_its_review_counts_for_nothing(actors: Actors) -> None:
    document_id = _document(actors)
    review(actors.client, actors.archivist, document_id)
    assert actors.client.delete(f"/api/documents/{document_id}", headers=actors.archivist).status_code == 204
    for method in ("PUT", "DELETE"):
        response = actors.client.request(method, f"/api/documents/{document_id}/pages/1/review", headers=actors.admin)
        assert response.status_code == 404 and response.json()["code"] == "DOCUMENT_NOT_FOUND"
    assert _recognition_lines(actors) == {}
    # An admin still sees the page (to recognise the document before restoring it), review and all.
    assert _pages(actors, document_id, actors.admin)[0]["reviewed"] is True


def test_a_new_ocr_reading_of_a_reviewed_page_clears_the_review(actors: Actors) -> None:
    document_id = _document(actors)
    correct(actors.client, actors.archivist, document_id, 0, "Liebe Mutter")
    review(actors.client, actors.archivist, document_id)
    services = services_of(actors.client)
    with services.db.sessions() as session:
        page_id = eligible_pages(session, TrainingKind.RECOGNITION)[0].page_id
    # Re-read with other lines: the reviewer vouched for the old ones, not for these.
    store_lines(actors.client, document_id, 1, [ocr_line(i, f"neu {i}", [[5, 9], [70, 9]], BOX) for i in range(4)])
    page = _pages(actors, document_id)[0]
    assert (page["reviewed"], page["reviewedAt"], page["reviewedBy"]) == (False, None, None)
    with services.db.sessions() as session:
        # The corrected line stays ground truth (a person's text is never lost); the new lines are not.
        assert [(line.order_index, line.text) for line in ground_truth(session, page_id)] == [(0, "Liebe Mutter")]
        assert eligible_pages(session, TrainingKind.SEGMENTATION) == []
