"""The search index stays what a rebuild from the lines would make, whatever writes the lines;
the reindex command rebuilds it."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from backend.db import Database
from backend.documents import lines as lines_module
from backend.documents.models import Document, Writer
from backend.search import index as index_module
from backend.search.index import index_everything, index_lines, rebuild
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
    documents = [
        document(actors, *[[_text(rng) for _ in range(3)] for _ in range(3)], writer=name, date="1914-12")
        for name in ("Anna Müller", "Karl Schmidt")
    ]
    services = services_of(actors.client)
    for _ in range(25):
        document_id = rng.choice(documents)
        if rng.random() < 0.15:
            # The document's writer or year (facts the engines' index keeps with each line).
            with services.db.sessions() as session:
                changed = session.get_one(Document, document_id)
                writers = list(session.scalars(select(Writer.id)))
                changed.writer_id = rng.choice([*writers, None])
                changed.date = rng.choice([None, date(rng.randint(1900, 1960), rng.randint(1, 12), 1)])
                session.commit()
            continue
        if rng.random() < 0.4:
            # A new OCR reading of a page: more or fewer lines, corrected ones kept.
            store_page(actors.client, document_id, rng.randint(1, 3), [_text(rng) for _ in range(rng.randint(0, 4))])
            continue
        response = actors.client.get(f"/api/documents/{document_id}/lines", headers=actors.archivist)
        if lines := response.json():
            line = rng.choice(lines)
            correct(actors, line["id"], _text(rng) or "leer", version=line["version"])
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


def test_two_transactions_indexing_one_line_at_once_both_succeed(actors: Actors) -> None:
    """A correction re-indexes the line before it while an OCR page store re-indexes the last
    line of the page before: both may write one line's row; the second waits, then succeeds."""
    document_id = document(actors, ["am Weih-", "nachten"])
    first = line_ids(actors, document_id)[0]
    services = services_of(actors.client)
    failures: list[SQLAlchemyError] = []
    with services.db.sessions() as holding:
        index_lines(holding, [first])  # its row written, not committed yet

        def second() -> None:
            try:
                with services.db.sessions() as session:
                    index_lines(session, [first])
                    session.commit()
            except SQLAlchemyError as exc:  # reported to the test's thread
                failures.append(exc)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(timeout=0.5)  # it waits for the first transaction's row
        holding.commit()
    thread.join(timeout=30)
    assert not thread.is_alive() and failures == []
    assert hit_lines(search(actors, "Weihnachten")) == [first]


@pytest.mark.parametrize("trashed_first", [True, False])
def test_a_line_indexed_while_its_document_is_trashed_is_never_found(actors: Actors, trashed_first: bool) -> None:
    """PostgreSQL decides a search without a filter by the facts in the line's row (``#t``, migration
    0010), not by reading the document: a line written while another transaction trashes the
    document must carry the fact, whichever of the two writes first and commits last."""
    document_id = document(actors, ["Gruss aus Graz"])
    line = line_ids(actors, document_id)[0]
    services = services_of(actors.client)
    with services.db.engine.begin() as connection:  # the line's row is written anew below
        connection.execute(text("DELETE FROM search_lines WHERE line_id = :l"), {"l": line})
    failures: list[SQLAlchemyError] = []

    def trash(session: Session) -> None:
        session.get_one(Document, document_id).deleted_at = services.clock()
        session.flush()

    def index(session: Session) -> None:
        index_lines(session, [line])

    first, second = (trash, index) if trashed_first else (index, trash)

    def other() -> None:
        try:
            with services.db.sessions() as session:
                second(session)
                session.commit()
        except SQLAlchemyError as exc:  # reported to the test's thread
            failures.append(exc)

    with services.db.sessions() as holding:
        first(holding)  # not committed yet
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=0.5)  # it waits for the first transaction
        holding.commit()
    thread.join(timeout=30)
    assert not thread.is_alive() and failures == []
    assert search(actors, "Graz")["total"] == 0
    assert actors.client.post(f"/api/trash/{document_id}/restore", headers=actors.admin).status_code == 200
    assert hit_lines(search(actors, "Graz")) == [line]


def _writer_change(actors: Actors, document_id: int, other: int, failures: list[SQLAlchemyError]) -> threading.Thread:
    """A thread (not started) that gives ``document_id`` the writer of ``other`` in a transaction of its own."""
    services = services_of(actors.client)
    with services.db.sessions() as session:
        writer_id = session.get_one(Document, other).writer_id

    def change() -> None:
        try:
            with services.db.sessions() as session:
                session.get_one(Document, document_id).writer_id = writer_id
                session.commit()
        except SQLAlchemyError as exc:  # reported to the test's thread
            failures.append(exc)

    return threading.Thread(target=change)


def test_a_document_changed_while_a_rebuild_writes_its_lines_waits_and_its_lines_follow(
    actors: Actors, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rebuild removes a slice's rows, then writes them anew; a change of a document of the
    slice in between (its writer) must neither deadlock with it (it waited for a removed row while
    the rebuild waited for the document) nor leave the rows with the old writer."""
    document_id = document(actors, ["Gruss aus Graz"], writer="Anna Adam")
    other = document(actors, ["Brief"], writer="Karl Berg")
    services = services_of(actors.client)
    failures: list[SQLAlchemyError] = []
    thread = _writer_change(actors, document_id, other, failures)
    write = index_module._write

    def write_after_the_change_began(*args: Any, **kwargs: Any) -> None:
        if not thread.is_alive() and thread.ident is None:
            thread.start()
            thread.join(timeout=1.5)  # it waits for the rebuild (or, unlocked, takes the document)
        write(*args, **kwargs)

    monkeypatch.setattr(index_module, "_write", write_after_the_change_began)
    rebuild(services.db.sessions)
    thread.join(timeout=30)
    assert not thread.is_alive() and failures == []
    assert hit_lines(search(actors, "Graz", writer="karl-berg")) == line_ids(actors, document_id)
    assert search(actors, "Graz", writer="anna-adam")["total"] == 0


def test_a_document_changed_while_a_new_reading_of_its_page_is_stored_waits_for_it(
    actors: Actors, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new OCR reading with fewer lines deletes the lines it lacks (their index rows go with
    them, locked) before it indexes the page: a change of the document in between waited for those
    rows while the store waited for the document — a deadlock, the page store failed."""
    document_id = document(actors, ["Gruss aus Graz", "zweite Zeile"], writer="Anna Adam")
    other = document(actors, ["Brief"], writer="Karl Berg")
    failures: list[SQLAlchemyError] = []
    thread = _writer_change(actors, document_id, other, failures)
    index = lines_module.index_pages

    def index_after_the_change_began(session: Session, page_ids: Any) -> None:
        thread.start()
        thread.join(timeout=1.5)  # it waits for the store (or, unlocked, takes the document)
        index(session, page_ids)

    monkeypatch.setattr(lines_module, "index_pages", index_after_the_change_began)
    store_page(actors.client, document_id, 1, ["Gruss aus Graz"])  # one line fewer
    thread.join(timeout=30)
    assert not thread.is_alive() and failures == []
    assert hit_lines(search(actors, "Graz", writer="karl-berg")) == line_ids(actors, document_id)


def test_a_rebuild_beside_people_correcting_keeps_their_text_and_finds_everything_meanwhile(
    actors: Actors,
) -> None:
    """``reindex-search`` on a running archive: a correction saved while it runs used to make
    SQLite's rebuild fail on the row the correction had indexed (the index left half empty), and
    every document was unfindable from the first commit until its slice came round again."""
    document(actors, ["Brief eins"])
    second = document(actors, ["Brief zwei"])
    third = document(actors, ["Brief drei"])
    target = line_ids(actors, second)[0]
    services = services_of(actors.client)
    commits = 0
    with services.db.sessions() as session:

        def commit() -> None:
            nonlocal commits
            session.commit()
            commits += 1
            if commits == 1:
                correct(actors, target, "Gruss aus Wien")
            assert [r["document"]["id"] for r in search(actors, "drei")["results"]] == [third]

        index_everything(session, batch=1, commit=commit)
    assert commits > 3  # a transaction for each document (batch=1)
    assert [r["document"]["id"] for r in search(actors, "Wien")["results"]] == [second]
    assert search(actors, "zwei")["total"] == 0
    incremental = _snapshot(services.db)
    rebuild(services.db.sessions)
    assert _snapshot(services.db) == incremental
