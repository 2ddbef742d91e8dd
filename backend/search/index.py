"""The search index: kept in step with the lines in the writer's own transaction.

Every write of lines calls :func:`index_pages` or :func:`index_lines` before it commits, so
a line is found by its new text in the very next request and never by its old one. Deleted
lines (and purged documents) take their index rows with them by cascade; trashed documents
stay indexed and are filtered out when searching.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, func, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from backend.documents.models import Document, Line, Page
from backend.search.folding import MAX_WORD_LENGTH, ends_hyphenated, terms
from backend.search.models import SearchLine, SearchVariant, SearchWord

# How many of the next line's words a line's row carries: a phrase of up to 10 words (the
# query's limit) that starts on this line's last word ends within them.
BRIDGE_WORDS = 9
# Words this short are found only as typed: one changed letter makes another word.
FUZZY_MIN_LENGTH = 4
# Bound parameters per statement (SQLite allows 32766; PostgreSQL 65535).
_CHUNK = 500


@dataclass(frozen=True)
class Entry:
    """One line's row in the index (see SearchLine)."""

    line_id: int
    document_id: int
    own: list[str]
    joined: str
    bridge: list[str]
    corrected: bool


@dataclass(frozen=True)
class _Line:
    id: int
    document_id: int
    page_number: int
    order_index: int
    current: str
    corrected: bool


def make_entry(line: _Line, following: _Line | None) -> Entry:
    """``line``'s row, ``following`` the next line in reading order (None: the document's last)."""
    return _entry(line, terms(line.current), terms(following.current) if following is not None else [])


def _entry(line: _Line, own: list[str], after: list[str]) -> Entry:
    """The same from the folded words of the line and of the next one."""
    joined = ""
    if own and after and ends_hyphenated(line.current):
        joined = (own[-1] + after[0])[:MAX_WORD_LENGTH]
    return Entry(line.id, line.document_id, own, joined, after[:BRIDGE_WORDS], line.corrected)


def fuzzy_candidate(word: str) -> bool:
    """Is ``word`` looked up with its near spellings? (Not short words, not numbers: 1914 is no 1915.)"""
    return len(word) >= FUZZY_MIN_LENGTH and word.isalpha()


def deletions(word: str) -> set[str]:
    """``word`` without one of its characters, for each character."""
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def _chunks(items: Iterable[Any], size: int = _CHUNK) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


# PostgreSQL's lexemes besides the line's own words (migration 0010): the next line's words
# marked, the facts the trigger adds (the corrected flag, the writer, the year, a trashed
# document) marked otherwise. Folded words are letters and digits only, so neither mark is ever a
# word's; and no lexeme carries a weight, so the GIN index decides a match alone (a weight made
# PostgreSQL read every row the index named and check it again: half of them for nothing).
BRIDGE_MARK = ">"
FACT_MARK = "#"


def _tsvector(entry: Entry) -> str:
    """The row's tsvector in PostgreSQL's input syntax, lexemes taken literally (no parser, no
    dictionary: the words are folded already), without positions: the line's own words and the
    joined word as they are, the next line's other words marked (BRIDGE_MARK). The trigger of
    migration 0010 adds the facts."""
    own = {*entry.own, *((entry.joined,) if entry.joined else ())}
    bridge = {BRIDGE_MARK + word for word in entry.bridge if word not in own}
    return " ".join(quote_lexeme(word) for word in sorted(own | bridge))


def quote_lexeme(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace("'", "''")
    return f"'{escaped}'"


# SQLite: rows straight to the driver's executemany (a rebuild writes millions; SQLAlchemy's
# per-row parameter handling cost more than SQLite's own work). Constant statements, values bound.
_SQLITE_LINES = (
    "INSERT INTO search_lines (line_id, document_id, own, joined, bridge, corrected) VALUES (?, ?, ?, ?, ?, ?)"
)
_SQLITE_WORDS = "INSERT OR IGNORE INTO search_words (word) VALUES (?)"
_SQLITE_VARIANTS = "INSERT OR IGNORE INTO search_variants (variant, word) VALUES (?, ?)"
# PostgreSQL: an upsert. Two transactions may index one line at once (a correction re-indexes
# the line before it, an OCR page store the last line of the page before): the second waits for
# the first's row and updates it, where a delete and insert would fail on the key.
_POSTGRES_LINES = text(
    "INSERT INTO search_lines (line_id, document_id, own, joined, bridge, corrected, tsv) "
    "VALUES (:line_id, :document_id, :own, :joined, :bridge, :corrected, CAST(:tsv AS tsvector)) "
    "ON CONFLICT (line_id) DO UPDATE SET document_id = excluded.document_id, own = excluded.own, "
    "joined = excluded.joined, bridge = excluded.bridge, corrected = excluded.corrected, tsv = excluded.tsv"
)


def _write(session: Session, entries: Sequence[Entry], known: set[str] | None = None) -> None:
    """Put ``entries`` in the index and their words in the vocabulary (SQLite: their old rows
    must be gone; PostgreSQL: they are replaced)."""
    rows = [e for e in entries if e.own or e.joined]
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        values = [
            {
                "line_id": e.line_id,
                "document_id": e.document_id,
                "own": " ".join(e.own),
                "joined": e.joined,
                "bridge": " ".join(e.bridge),
                "corrected": e.corrected,
                "tsv": _tsvector(e),
            }
            for e in rows
        ]
        connection.execute(_POSTGRES_LINES, values)
    else:
        # The FTS5 row follows by trigger (migration 0006).
        connection.exec_driver_sql(
            _SQLITE_LINES,
            [(e.line_id, e.document_id, " ".join(e.own), e.joined, " ".join(e.bridge), e.corrected) for e in rows],
        )
    words = {w for e in rows for w in e.own} | {e.joined for e in rows if e.joined}
    _add_words(session, words, known)


def _add_words(session: Session, words: set[str], known: set[str] | None) -> None:
    if known is not None:
        words -= known
    new: list[str] = []
    for chunk in _chunks(sorted(words)):
        present = set(session.scalars(select(SearchWord.word).where(SearchWord.word.in_(chunk))))
        new.extend(w for w in chunk if w not in present)
    if known is not None:
        known.update(words)
    if not new:
        return
    connection = session.connection()
    variants = [
        (variant, word) for word in new for variant in ({word} | (deletions(word) if fuzzy_candidate(word) else set()))
    ]
    # Two writers may add the same new word at once: the second one's row is a no-op.
    if connection.dialect.name != "postgresql":
        connection.exec_driver_sql(_SQLITE_WORDS, [(word,) for word in new])
        connection.exec_driver_sql(_SQLITE_VARIANTS, variants)
        return
    for chunk in _chunks(new, 2000):
        connection.execute(postgresql.insert(_SEARCH_WORDS).on_conflict_do_nothing(), [{"word": w} for w in chunk])
    for chunk in _chunks(variants, 5000):
        connection.execute(
            postgresql.insert(_SEARCH_VARIANTS).on_conflict_do_nothing(),
            [{"variant": variant, "word": word} for variant, word in chunk],
        )


def _remove(session: Session, line_ids: Collection[int]) -> None:
    for chunk in _chunks(sorted(line_ids)):
        session.execute(delete(SearchLine).where(SearchLine.line_id.in_(chunk)))


_SEARCH_WORDS = cast(Table, SearchWord.__table__)
_SEARCH_VARIANTS = cast(Table, SearchVariant.__table__)
_LINE_COLUMNS = (Line.id, Page.document_id, Page.number, Line.order_index, Line.text, Line.ocr_text)


def _line(row: Any) -> _Line:
    line_id, document_id, number, order_index, person, ocr = row
    return _Line(line_id, document_id, number, order_index, person if person is not None else ocr, person is not None)


def _neighbourhood(session: Session, page_ids: Collection[int]) -> tuple[set[tuple[int, int]], dict[int, list[_Line]]]:
    """The (document, number) of ``page_ids``, and the lines of those pages and the pages either
    side of each, per document in reading order."""
    session.flush()
    pages: set[tuple[int, int]] = set()
    for chunk in _chunks(sorted(page_ids)):
        pages.update(session.execute(select(Page.document_id, Page.number).where(Page.id.in_(chunk))).all())
    wanted: dict[int, set[int]] = defaultdict(set)
    for document_id, number in pages:
        wanted[document_id].update((number - 1, number, number + 1))
    ordered: dict[int, list[_Line]] = {}
    for document_id, numbers in wanted.items():
        rows = session.execute(
            select(*_LINE_COLUMNS)
            .join(Page, Page.id == Line.page_id)
            .where(Page.document_id == document_id, Page.number.in_(sorted(numbers)))
            .order_by(Page.number, Line.order_index)
        )
        ordered[document_id] = [_line(row) for row in rows]
    return pages, ordered


def _following(lines: list[_Line], position: int) -> _Line | None:
    """The line after ``lines[position]`` in reading order: on the same page, or the next page's first."""
    if position + 1 >= len(lines):
        return None
    here, after = lines[position], lines[position + 1]
    return after if after.page_number in (here.page_number, here.page_number + 1) else None


def lock_documents(session: Session, document_ids: Collection[int]) -> None:
    """PostgreSQL: lock the documents' rows before their lines' rows are written (as a change of a
    document does), in key order. The facts' trigger locks a line's document too (migration 0010),
    but only as each row is written: a document changed meanwhile would wait for a row this
    transaction already holds, and this one for the document — a deadlock. Taken first, either
    side simply waits for the other. (SQLite has one writer at a time.)"""
    if not document_ids or session.get_bind().dialect.name != "postgresql":
        return
    for chunk in _chunks(sorted(document_ids)):
        session.execute(
            select(Document.id)
            .where(Document.id.in_(chunk))
            .order_by(Document.id)
            .with_for_update(key_share=True)  # FOR NO KEY UPDATE
        )


def _reindex(session: Session, ordered: dict[int, list[_Line]], chosen: Callable[[int, list[_Line]], bool]) -> None:
    entries: list[Entry] = []
    for lines in ordered.values():
        for position, line in enumerate(lines):
            if chosen(position, lines):
                entries.append(make_entry(line, _following(lines, position)))
    if session.get_bind().dialect.name == "postgresql":
        lock_documents(session, {e.document_id for e in entries})
        _remove(session, [e.line_id for e in entries if not (e.own or e.joined)])
    else:
        _remove(session, [e.line_id for e in entries])
    _write(session, entries)


def index_pages(session: Session, page_ids: Collection[int]) -> None:
    """Bring the search index in step with the current lines of these pages, in the caller's
    transaction (no commit). Call after inserting/updating/deleting lines of a page. It also
    refreshes what depends on a neighbour (a word hyphenated across the page's first/last line)."""
    if not page_ids:
        return
    pages, ordered = _neighbourhood(session, page_ids)

    def chosen(position: int, lines: list[_Line]) -> bool:
        line = lines[position]
        if (line.document_id, line.page_number) in pages:
            return True
        # The last line of the page before one of these: its bridge is this page's first line.
        following = lines[position + 1] if position + 1 < len(lines) else None
        last_on_page = following is None or following.page_number != line.page_number
        return last_on_page and (line.document_id, line.page_number + 1) in pages

    _reindex(session, ordered, chosen)


def index_lines(session: Session, line_ids: Collection[int]) -> None:
    """Same for single lines (a person's correction), and the line before each (its bridge)."""
    if not line_ids:
        return
    session.flush()
    wanted = set(line_ids)
    page_ids: set[int] = set()
    for chunk in _chunks(sorted(wanted)):
        page_ids.update(session.scalars(select(Line.page_id).where(Line.id.in_(chunk))))
    _, ordered = _neighbourhood(session, page_ids)

    def chosen(position: int, lines: list[_Line]) -> bool:
        if lines[position].id in wanted:
            return True
        return position + 1 < len(lines) and lines[position + 1].id in wanted

    _reindex(session, ordered, chosen)


def _clear_vocabulary(session: Session) -> None:
    session.execute(delete(SearchVariant))
    session.execute(delete(SearchWord))


# Documents indexed in one transaction at most (fewer where their lines pass ``batch``).
_SLICE_DOCUMENTS = 200


def _next_slice(session: Session, after: int, batch: int) -> list[int]:
    """The next documents (ids above ``after``) with pages, as many as hold about ``batch`` lines (one at least)."""
    following = list(
        session.scalars(
            select(Page.document_id)
            .where(Page.document_id > after)
            .group_by(Page.document_id)
            .order_by(Page.document_id)
            .limit(_SLICE_DOCUMENTS)
        )
    )
    if not following:
        return []
    counted = session.execute(
        select(Page.document_id, func.count(Line.id))
        .join(Line, Line.page_id == Page.id)
        .where(Page.document_id.in_(following))
        .group_by(Page.document_id)
    )
    counts = {document_id: count for document_id, count in counted}
    chosen: list[int] = []
    lines = 0
    for document_id in following:
        count = counts.get(document_id, 0)
        if chosen and lines + count > batch:
            break
        chosen.append(document_id)
        lines += count
    return chosen


def index_everything(session: Session, *, batch: int = 5000, commit: Callable[[], None] | None = None) -> int:
    """Index every line afresh, in ``session``; ``commit`` (if given) is called after each slice
    of whole documents (about ``batch`` lines). Returns how many lines were indexed.

    The index is replaced a slice at a time, never emptied first: a search while it runs finds
    every document. A slice's old rows go, its lines are read and its rows written in one
    transaction that begins with its write (SQLite: no other writer can commit between the read
    and the write, so a correction saved meanwhile is indexed by its own transaction before or
    after; PostgreSQL: rows are upserted, and a correction waits for the slice's deleted rows).
    """
    _clear_vocabulary(session)
    if commit is not None:
        commit()
    known: set[str] = set()
    count = 0
    last_document = 0
    while documents := _next_slice(session, last_document, batch):
        last_document = documents[-1]
        if commit is not None:
            # End the read above: the slice's transaction must begin with its write (SQLite
            # cannot turn a read that another writer overtook into a write).
            commit()
        lock_documents(session, documents)
        session.execute(delete(SearchLine).where(SearchLine.document_id.in_(documents)))
        rows = session.execute(
            select(*_LINE_COLUMNS)
            .join(Page, Page.id == Line.page_id)
            .where(Page.document_id.in_(documents))
            .order_by(Page.document_id, Page.number, Line.order_index)
        ).all()
        pending: list[Entry] = []
        previous: tuple[_Line, list[str]] | None = None
        for row in rows:
            line = _line(row)
            own = terms(line.current)
            if previous is not None:
                before, before_own = previous
                contiguous = before.document_id == line.document_id and line.page_number - before.page_number <= 1
                pending.append(_entry(before, before_own, own if contiguous else []))
            previous = (line, own)
            count += 1
            if len(pending) >= batch:
                _write(session, pending, known)
                pending = []
        if previous is not None:
            pending.append(_entry(previous[0], previous[1], []))
        _write(session, pending, known)
        if commit is not None:
            commit()
    return count


def rebuild(session_factory: Callable[[], Session], *, batch: int = 5000) -> int:
    """Rebuild the whole index from the lines (CLI ``python -m backend reindex-search``, the
    migration's backfill, bench loading). Returns lines indexed."""
    with session_factory() as session:
        count = index_everything(session, batch=batch, commit=session.commit)
        if session.get_bind().dialect.name == "postgresql":
            # Fresh statistics: planned on the empty tables' ones, a search of a common word
            # went through every line of every document instead of the GIN index.
            session.execute(text("ANALYZE search_lines, search_words, search_variants"))
        else:
            # FTS5's index merged into one segment: replaced a slice at a time, each word's rows
            # lay in many segments (and the replaced ones beside them), and every lookup read
            # them all (1 000 000 lines: a search 7.0 ms of CPU before, 6.45 ms after; bench/search_cpu.py).
            session.execute(text("INSERT INTO search_fts (search_fts) VALUES ('optimize')"))
        session.commit()
        return count


def index_everything_on(connection: Connection) -> int:
    """:func:`index_everything` on a migration's connection (its transaction is the migration's)."""
    with Session(bind=connection) as session:
        return index_everything(session, commit=session.flush)
