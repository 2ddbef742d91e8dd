"""Re-running OCR never loses a person's work: seeded variants of old lines, corrections and new readings."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sqlalchemy import delete, select

from backend.documents.models import Line, Page
from tests.backend.conftest import Actors, services_of
from tests.backend.ocr_jobs import upload


def _reading(rng: random.Random, tag: str) -> list[dict[str, Any]]:
    positions = rng.sample(range(12), rng.randint(0, 8))
    return [
        {"index": i, "text": f"{tag}{i}", "confidence": 0.5, "baseline": [[0, i]], "polygon": [[0, 0]]}
        for i in positions
    ]


@pytest.mark.parametrize("seed", range(4))
def test_corrections_survive_any_new_reading(actors: Actors, seed: int) -> None:
    services = services_of(actors.client)
    document_id = upload(actors, 500 + seed, pages=1)
    with services.db.sessions() as session:
        page_id = session.scalars(select(Page.id).where(Page.document_id == document_id)).one()
    rng = random.Random(seed)
    for variant in range(60):
        with services.db.sessions() as session:
            session.execute(delete(Line).where(Line.page_id == page_id).execution_options(synchronize_session="fetch"))
            services.lines.replace_page(
                session, document_id, 1, _reading(rng, "old"), model="m", model_version=None, now=services.clock()
            )
            session.commit()
            lines = session.scalars(select(Line).where(Line.page_id == page_id)).all()
            old_positions = {line.order_index: line.id for line in lines}
            corrected = {
                line.order_index: f"person {variant} {line.order_index}" for line in lines if rng.random() < 0.4
            }
            for line in lines:
                if line.order_index in corrected:
                    line.text, line.version = corrected[line.order_index], 2
            session.commit()
            new = _reading(rng, "new")
            services.lines.replace_page(
                session, document_id, 1, new, model="m2", model_version="2", now=services.clock()
            )
            session.commit()
            after = {line.order_index: line for line in session.scalars(select(Line).where(Line.page_id == page_id))}
        new_positions = {item["index"] for item in new}
        # Every correction is there with its text and version; every new position has the new OCR text;
        # nothing else is left (an uncorrected old line the new reading lacks is gone). An old line
        # at a new position is the same line (its id), its version raised where its text changed.
        assert set(after) == new_positions | set(corrected), variant
        for index, line in after.items():
            if index in old_positions:
                assert line.id == old_positions[index]
            if index in corrected:
                assert (line.text, line.version) == (corrected[index], 2)
            else:
                assert (line.text, line.version) == (None, 2 if index in old_positions else 1)
            if index in new_positions:
                assert (line.ocr_text, line.model_name) == (f"new{index}", "m2")
            else:
                assert line.ocr_text == f"old{index}"
