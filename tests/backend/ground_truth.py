"""Documents with lines a person corrected or reviewed: the data training runs are built from.

``upload_page_images`` uploads generated pages whose text and line positions are known
(tests/support/synthetic.py) and stores their lines as an OCR reading would; ``correct`` and
``review`` then make ground truth of them the way a person does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi.testclient import TestClient

from tests.backend.conftest import services_of
from tests.support.synthetic import RenderedPage, to_png


def ocr_line(index: int, text: str, baseline: Sequence[Any], polygon: Sequence[Any]) -> dict[str, Any]:
    """One line as the OCR service reports it (what ``Lines.replace_page`` stores)."""
    return {
        "index": index,
        "text": text,
        "confidence": 0.5,
        "baseline": [list(point) for point in baseline],
        "polygon": [list(point) for point in polygon],
    }


def misread(text: str) -> str:
    """A plausible OCR error: every second letter e read as c."""
    return "".join("c" if ch == "e" and n % 2 else ch for n, ch in enumerate(text))


def upload(client: TestClient, headers: dict[str, str], content: bytes, title: str, writer: str | None = None) -> int:
    data = {"title": title, **({"writer": writer} if writer else {})}
    response = client.post(
        "/api/documents", headers=headers, files={"file": ("scan.bin", content, "application/octet-stream")}, data=data
    )
    assert response.status_code == 201, response.text
    document_id: int = response.json()["id"]
    return document_id


def store_lines(client: TestClient, document_id: int, number: int, lines: Sequence[dict[str, Any]]) -> None:
    services = services_of(client)
    with services.db.sessions() as session:
        services.lines.store_page(
            session, document_id, number, lines, model="base", model_version="1", now=services.clock()
        )


def upload_page_images(
    client: TestClient, headers: dict[str, str], pages: Sequence[RenderedPage], title: str, writer: str | None = None
) -> list[int]:
    """Each page a PNG document of its own, its lines stored misread (``misread``); the documents' ids."""
    ids = []
    for n, page in enumerate(pages):
        document_id = upload(client, headers, to_png(page.image), f"{title} {n}", writer)
        lines = [ocr_line(i, misread(line.text), line.baseline, line.polygon) for i, line in enumerate(page.lines)]
        store_lines(client, document_id, 1, lines)
        ids.append(document_id)
    return ids


def lines_of(client: TestClient, headers: dict[str, str], document_id: int) -> list[dict[str, Any]]:
    response = client.get(f"/api/documents/{document_id}/lines", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json())


def correct(
    client: TestClient, headers: dict[str, str], document_id: int, index: int, text: str, page: int = 1
) -> None:
    """Save a person's text for line ``index`` of the page through the API."""
    line = next(
        line for line in lines_of(client, headers, document_id) if line["page"] == page and line["orderIndex"] == index
    )
    response = client.patch(
        f"/api/lines/{line['id']}", headers=headers, json={"text": text, "version": line["version"]}
    )
    assert response.status_code == 200, response.text


def review(client: TestClient, headers: dict[str, str], document_id: int, number: int = 1) -> dict[str, Any]:
    response = client.put(f"/api/documents/{document_id}/pages/{number}/review", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
