"""Helpers for the search tests: documents with lines of chosen text, and searching them."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.backend.conftest import Actors, services_of
from tests.backend.documents import make_document

_seed = 0


def ocr_line(index: int, text: str) -> dict[str, object]:
    return {
        "index": index,
        "text": text,
        "confidence": 0.8,
        "baseline": [[10, 20 + index], [90, 20 + index]],
        "polygon": [[10, 10], [90, 10], [90, 30], [10, 30]],
    }


def store_page(client: TestClient, document_id: int, number: int, texts: list[str]) -> None:
    """The OCR's reading of one page, stored as the OCR job stores it (indexed in its transaction)."""
    services = services_of(client)
    with services.db.sessions() as session:
        services.lines.store_page(
            session,
            document_id,
            number,
            [ocr_line(i, text) for i, text in enumerate(texts)],
            model="kurrent",
            model_version="3",
            now=services.clock(),
        )


def document(actors: Actors, *pages: list[str], title: str = "Brief", **fields: str) -> int:
    """A document of ``len(pages)`` pages whose OCR read these lines (page by page)."""
    global _seed
    _seed += 1
    response = actors.client.post(
        "/api/documents",
        headers=actors.archivist,
        files={"file": ("a.pdf", make_document("pdf", 7000 + _seed, pages=max(1, len(pages))), "application/pdf")},
        data={"title": title, **fields},
    )
    assert response.status_code == 201, response.text
    document_id = int(response.json()["id"])
    for number, texts in enumerate(pages, start=1):
        store_page(actors.client, document_id, number, texts)
    return document_id


def line_ids(actors: Actors, document_id: int) -> list[int]:
    response = actors.client.get(f"/api/documents/{document_id}/lines", headers=actors.archivist)
    assert response.status_code == 200, response.text
    return [int(line["id"]) for line in response.json()]


def correct(actors: Actors, line_id: int, text: str, version: int = 1) -> None:
    response = actors.client.patch(
        f"/api/lines/{line_id}", headers=actors.archivist, json={"text": text, "version": version}
    )
    assert response.status_code == 200, response.text


def search(actors: Actors, q: str, **params: Any) -> dict[str, Any]:
    response = actors.client.get("/api/search", params={"q": q, **params}, headers=actors.archivist)
    assert response.status_code == 200, response.text
    return dict(response.json())


def hit_lines(answer: dict[str, Any]) -> list[int]:
    """Every hit's line id, in the order shown."""
    return [hit["lineId"] for result in answer["results"] for hit in result["hits"]]


def hit_texts(answer: dict[str, Any]) -> list[str]:
    return [hit["text"] for result in answer["results"] for hit in result["hits"]]
