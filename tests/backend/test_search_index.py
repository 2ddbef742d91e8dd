"""The search index stays what a rebuild from the lines would make, whatever writes the lines;
the reindex command rebuilds it."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from backend.db import Database
from backend.search.index import rebuild
from tests.backend.conftest import DATABASE_KIND, Actors, services_of
from tests.backend.search_support import correct, document, hit_lines, line_ids, search, store_page

ROOT = Path(__file__).resolve().parents[2]
_WORDS = ["Weih-", "nachten", "liebe", "Mutter", "Grüße", "Gruesse", "Krieg¬", "zeit", "Hof", "ſein", "Straße", "⸗"]


def _snapshot(database: Database) -> list[Any]:
    """Everything the index holds, engine's own part included."""
    with database.engine.connect() as connection:
        rows: list[Any] = [
            tuple(row)
            for row in connection.execute(
                text("SELECT line_id, document_id, own, joined, bridge, corrected FROM search_lines ORDER BY line_id")
            )
        ]
        if DATABASE_KIND == "sqlite":
            engine = "SELECT rowid, own, bridge, flags FROM search_fts ORDER BY rowid"
        else:
            engine = "SELECT line_id, tsv::text FROM search_lines ORDER BY line_id"
        rows.extend(tuple(row) for row in connection.execute(text(engine)))
    return rows


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(0, 4)))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_after_any_writes_the_index_is_what_a_rebuild_makes(actors: Actors, seed: int) -> None:
    rng = random.Random(seed)
    documents = [document(actors, *[[_text(rng) for _ in range(3)] for _ in range(3)]) for _ in range(2)]
    for _ in range(25):
        document_id = rng.choice(documents)
        if rng.random() < 0.4:
            # A new OCR reading of a page: more or fewer lines, corrected ones kept.
            store_page(actors.client, document_id, rng.randint(1, 3), [_text(rng) for _ in range(rng.randint(0, 4))])
            continue
        response = actors.client.get(f"/api/documents/{document_id}/lines", headers=actors.archivist)
        if lines := response.json():
            line = rng.choice(lines)
            correct(actors, line["id"], _text(rng) or "leer", version=line["version"])
    services = services_of(actors.client)
    incremental = _snapshot(services.db)
    assert incremental, "the writes left nothing indexed: the test would prove nothing"
    count = rebuild(services.db.sessions, batch=7)
    assert count == sum(len(line_ids(actors, d)) for d in documents)
    assert _snapshot(services.db) == incremental


def test_the_reindex_command_rebuilds_the_index(actors: Actors, database_url: str, tmp_path: Path) -> None:
    document_id = document(actors, ["Liebe Mutter", "viele Grüße"])
    with services_of(actors.client).db.engine.begin() as connection:
        connection.execute(text("DELETE FROM search_lines"))
    assert search(actors, "Mutter")["total"] == 0
    done = subprocess.run(
        [sys.executable, "-m", "backend", "reindex-search", "--batch", "1"],
        env={**os.environ, "APP_DATABASE_URL": database_url, "APP_STORAGE_DIR": str(tmp_path / "storage")},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "Search index rebuilt: 2 lines." in done.stdout
    assert hit_lines(search(actors, "Gruesse")) == line_ids(actors, document_id)[1:]
