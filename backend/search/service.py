"""Searching the archive: candidate lines from the engine's index, judged, ranked, grouped by document."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    bindparam,
    cast,
    column,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.orm import Session

from backend.documents.models import Document, Line, Page, Writer
from backend.search.index import BRIDGE_MARK, FACT_MARK, quote_lexeme
from backend.search.models import FTS_TABLE, SearchLine
from backend.search.query import Phrase, Query, highlights, is_prefix, judge, parse, widen
from backend.search.sampling import NO_SHARES, SHARES, predicate
from backend.search.schemas import (
    SearchDocumentOut,
    SearchHitOut,
    SearchOut,
    SearchParams,
    SearchResultOut,
    SearchWriterOut,
)
from backend.settings import Settings


@dataclass(frozen=True)
class SearchLimits:
    hits_per_document: int
    candidate_lines: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SearchLimits:
        return cls(settings.search_hits_per_document, settings.search_candidate_lines)


class _Candidate(NamedTuple):
    """A hit line, made hundreds of times a search: one flat tuple that compares as its rank (a
    frozen dataclass took about three times as long to make; a rank tuple inside was one more
    object a line). Best first: a person's text, then exact matches, then shorter lines, then in
    the order stored (``line_id`` is unique, so the fields after it never decide)."""

    ocr: bool  # no person's text
    near: bool  # matched by a near spelling
    length: int
    line_id: int
    document_id: int
    joined: str
    bridge: Sequence[str]


# A decided query's candidates: the next line's words are not read (see _Candidate.bridge).
_NO_BRIDGE: tuple[str, ...] = ()


# A date filter is handed to the engine as the years it spans only up to this many years: a
# wider one passes so many documents that reading the word's rows and dropping the others costs
# less than the engine's union of that many years' rows.
MAX_FACT_YEARS = 15


def _fact_years(params: SearchParams) -> range | None:
    """The years of the date filter, where the engine is handed them as facts."""
    if params.date_from is None or params.date_to is None:
        return None
    first, last = params.date_from.year, params.date_to.year
    return range(first, last + 1) if first <= last < first + MAX_FACT_YEARS else None


def facts(params: SearchParams, writer_id: int | None) -> list[list[str]]:
    """The filters as the document facts in the index (migration 0008): groups that must all
    match, each one of its tokens. They only narrow: the filters on the documents still apply."""
    groups = []
    if writer_id is not None:
        groups.append([f"w{writer_id}"])
    years = _fact_years(params)
    if years is not None:
        groups.append([f"y{year}" for year in years])
    return groups


def _facts_filters(params: SearchParams, writer_id: int | None) -> set[str]:
    """The filters (names in _FILTERS) that :func:`facts` hands to the engine as well."""
    expressed = set()
    if writer_id is not None:
        expressed.add("writer_id")
    if _fact_years(params) is not None:
        expressed |= {"date_from", "date_to"}
    return expressed


def _exact_facts_filters(params: SearchParams, writer_id: int | None) -> set[str]:
    """The filters the facts express exactly (PostgreSQL then reads no document): the writer, and
    a date range of whole years (the year facts know no months)."""
    exact = {"writer_id"} if writer_id is not None else set()
    years = _fact_years(params)
    if years is not None and params.date_from == date(years[0], 1, 1) and params.date_to == date(years[-1], 12, 31):
        exact |= {"date_from", "date_to"}
    return exact


def _fts5_term(word: str) -> str:
    """A word as an FTS5 string; a beginning (``weihn*``) as FTS5's prefix query of it."""
    if is_prefix(word):
        return '"' + word[:-1].replace('"', '""') + '"*'
    return '"' + word.replace('"', '""') + '"'


def _fts5_group(words: Iterable[str], columns: str) -> str:
    quoted = " OR ".join(_fts5_term(w) for w in sorted(words))
    return f"{columns} : ({quoted})"


def fts5_match(query: Query, *, exact: bool, corrected: bool, document_facts: Sequence[Sequence[str]] = ()) -> str:
    """The FTS5 MATCH expression: each phrase's first word among the line's own words (and the
    joined one), its other words there or on the next line, the document's facts among the flags;
    excluded single words not in its own."""
    groups = []
    for phrase in query.include:
        for index, word in enumerate(phrase.words):
            spellings = {word} if exact else query.spellings(word)
            groups.append(_fts5_group(spellings, "own" if index == 0 else "{own bridge}"))
    if corrected:
        groups.append('flags : "c"')
    groups.extend(_fts5_group(tokens, "flags") for tokens in document_facts)
    expression = "(" + " AND ".join(groups) + ")"
    for phrase in _single_words(query.exclude):
        expression += " NOT " + _fts5_group(phrase.words, "own")
    return expression


def fact_lexeme(token: str) -> str:
    """A document fact's token (``w7``, ``y1914``, ``c``) as PostgreSQL's index holds it (migration 0010)."""
    return FACT_MARK + token


# PostgreSQL: a trashed document's lines (migration 0010), never found.
_NOT_TRASHED = "!" + quote_lexeme(fact_lexeme("t"))


def _lexeme(word: str) -> str:
    """A word as a tsquery lexeme; a beginning (``weihn*``, ``>weihn*``) as a prefix match of it."""
    if is_prefix(word):
        return quote_lexeme(word[:-1]) + ":*"
    return quote_lexeme(word)


def tsquery(query: Query, *, exact: bool, corrected: bool, document_facts: Sequence[Sequence[str]] = ()) -> str:
    """The same for PostgreSQL: a phrase's first word among the line's own words, its other words
    there or marked as the next line's, the facts marked as facts; never a trashed document's line."""
    groups = []
    for phrase in query.include:
        for index, word in enumerate(phrase.words):
            spellings = sorted({word} if exact else query.spellings(word))
            lexemes = spellings if index == 0 else [*spellings, *(BRIDGE_MARK + w for w in spellings)]
            groups.append("(" + " | ".join(_lexeme(w) for w in lexemes) + ")")
    if corrected:
        groups.append(quote_lexeme(fact_lexeme("c")))
    for tokens in document_facts:
        groups.append("(" + " | ".join(quote_lexeme(fact_lexeme(t)) for t in tokens) + ")")
    for phrase in _single_words(query.exclude):
        groups.append("!" + _lexeme(phrase.words[0]))
    groups.append(_NOT_TRASHED)
    return " & ".join(groups)


def _single_words(phrases: list[Phrase]) -> list[Phrase]:
    # Excluded phrases of several words are judged in Python only (the index holds no positions).
    return [p for p in phrases if len(p.words) == 1]


_COLUMNS = (
    SearchLine.line_id,
    SearchLine.document_id,
    SearchLine.own,
    SearchLine.joined,
    SearchLine.corrected,
    SearchLine.bridge,
)


# The filters on the documents, each comparing a column with the value bound under its name.
_FILTERS: dict[str, ColumnElement[bool]] = {
    "writer_id": Document.writer_id == bindparam("writer_id"),
    "status": Document.status == bindparam("status"),
    "date_from": Document.date >= bindparam("date_from"),
    "date_to": Document.date <= bindparam("date_to"),
}


@lru_cache(maxsize=256)
def _candidates_statement(
    dialect: str,
    filters: tuple[str, ...],
    limit: int,
    corrected: bool,
    bridge: bool,
    sample: int | None = None,
    documents: bool = True,
) -> Select[*tuple[Any, ...]]:
    """The candidate lines' statement: one object per dialect, filters (names in _FILTERS), cap,
    ``corrected`` (PostgreSQL: a person's lines only; SQLite has a flag in the pattern),
    ``bridge`` (the next line's words too, to judge phrases) and ``sample`` (PostgreSQL: every
    how many lines the statement reads, by that sample's own index; see sampling.py) and
    ``documents`` (PostgreSQL: False where the facts express every filter and the trashed
    documents, so no document is read and ``filters`` is empty), made once a process: building it
    and SQLAlchemy's cache key of a new one cost as much as SQLite's lookup of a rare word. Each
    pass binds its ``pattern``, and the filters their values."""
    columns = _COLUMNS if bridge else _COLUMNS[:-1]
    if dialect == "sqlite":
        fts = table(FTS_TABLE, column("rowid", Integer))
        hidden: ColumnElement[Any] = literal_column(FTS_TABLE)
        statement = (
            select(*columns)
            .select_from(fts)
            .join(SearchLine, SearchLine.line_id == fts.c.rowid)
            .join(Document, Document.id == SearchLine.document_id)
            .where(hidden.op("MATCH")(bindparam("pattern", type_=String)))
        )
    else:
        tsv: ColumnElement[Any] = literal_column("search_lines.tsv")
        wanted = cast(bindparam("pattern", type_=String), TSQUERY)
        statement = select(*columns).where(tsv.op("@@")(wanted))
        if documents:
            statement = statement.join(Document, Document.id == SearchLine.document_id)
    if documents:
        # Trashed documents are never found.
        statement = statement.where(Document.deleted_at.is_(None), *(_FILTERS[name] for name in filters))
    if corrected:
        statement = statement.where(SearchLine.corrected)
    if sample is not None:
        statement = statement.where(text(predicate(sample)))
    return statement.limit(limit)


def _filter_values(params: SearchParams, writer_id: int | None) -> dict[str, Any]:
    """The values the search's filters bind, by their names in _FILTERS (in its order)."""
    values = {
        "writer_id": writer_id,
        "status": params.status,
        "date_from": params.date_from,
        "date_to": params.date_to,
    }
    return {name: value for name, value in values.items() if value is not None}


# PostgreSQL: the settings in one round trip each (no parameters: psycopg sends the statements as one query).
_BITMAP_SCANS_ONLY = text("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off")
_NO_NESTED_LOOPS = text("SET LOCAL enable_nestloop = off")
_ANY_SCANS = text("RESET enable_seqscan; RESET enable_indexscan; RESET enable_nestloop")


def word_groups(query: Query, *, exact: bool) -> list[set[str]]:
    """The words of a pass's tsquery as groups a matching row holds one of each (sampling.py)."""
    return [{word} if exact else query.spellings(word) for phrase in query.include for word in phrase.words]


def _simple(query: Query) -> bool:
    """Does the index's match alone decide the query? (Single words only: the engine checks them
    in the line's own words, and the excluded ones too; phrases need their order checked.)"""
    return all(len(p.words) == 1 for p in [*query.include, *query.exclude])


def _candidates(
    session: Session, query: Query, params: SearchParams, writer_id: int | None, limit: int
) -> tuple[list[_Candidate], bool]:
    """The hit lines among the candidates, and whether the cap cut them.

    The lines that match exactly are read first (at most ``limit``), then those by near
    spellings. Where a pass hits the cap, the lines with a person's text are read on their own
    (they rank first, and would otherwise be left to chance), and no weaker pass follows.
    """
    values = _filter_values(params, writer_id)
    document_facts = facts(params, writer_id)
    decided = _simple(query)
    fuzzy = any(query.variants.values())
    seen: dict[int, _Candidate] = {}
    connection = session.connection()
    dialect = connection.dialect.name
    postgres = dialect == "postgresql"
    # PostgreSQL: no document read where the facts in the index say all the filters say (and
    # which documents are trashed, migration 0010): a lookup a line saved.
    documents = not postgres or not set(values) <= _exact_facts_filters(params, writer_id)
    if not documents:
        values = {}
    statement = _candidates_statement(dialect, tuple(values), limit, False, not decided, documents=documents)
    shares = SHARES.get(connection) if postgres else NO_SHARES
    # A sample only where the engine sees every filter as a fact: a filter it does not see (a
    # status, a wide date range) may pass few of a sample's lines, and the sample's then read in vain.
    expressed = set(values) <= _facts_filters(params, writer_id)
    pattern = tsquery if postgres else fts5_match
    fact_lexemes = [[fact_lexeme(t) for t in tokens] for tokens in document_facts]

    # PostgreSQL: a person's lines by the GIN index of those lines alone (migration 0008), a
    # twentieth of the whole one, rather than by intersecting a common word's entries with the flag's.
    corrected_statement = _candidates_statement(
        dialect, tuple(values), limit, postgres, not decided, documents=documents
    )

    def read(exact: bool, corrected: bool) -> int:
        """One pass; the lines it read (at most ``limit``)."""
        sample = None
        if not corrected and expressed:
            sample = shares.sample(word_groups(query, exact=exact), fact_lexemes, limit)
        if sample is not None:
            sampled = _candidates_statement(
                dialect, tuple(values), limit, False, not decided, sample=sample, documents=documents
            )
            read_lines = read_from(sampled, exact, corrected)
            if read_lines >= limit:
                return read_lines
        return read_from(corrected_statement if corrected else statement, exact, corrected)

    def read_from(chosen: Select[*tuple[Any, ...]], exact: bool, corrected: bool) -> int:
        flagged = corrected and not postgres
        wanted = pattern(query, exact=exact, corrected=flagged, document_facts=document_facts)
        rows = connection.execute(chosen, {"pattern": wanted, **values}).all()
        # Fewer words around the match rank higher (BM25's length normalisation; the engines'
        # own scores cost ten times the lookup on common words and differ between them).
        if decided:
            for line_id, document_id, own, joined, is_corrected in rows:
                if line_id not in seen:
                    length = own.count(" ") + 1
                    seen[line_id] = _Candidate(
                        not is_corrected, not exact, length, line_id, document_id, joined, _NO_BRIDGE
                    )
            return len(rows)
        for line_id, document_id, own, joined, is_corrected, bridge in rows:
            if line_id in seen:
                continue
            bridge_words = bridge.split()
            verdict = judge(query, own.split(), joined, bridge_words)
            if verdict is not None:
                length = own.count(" ") + 1
                seen[line_id] = _Candidate(
                    not is_corrected, not verdict.exact, length, line_id, document_id, joined, bridge_words
                )
        return len(rows)

    # PostgreSQL, a very common word (more than sampling.MAX_SHARE of the lines, no filter): its
    # lines read in the table's order until the cap, as the planner plans it left to itself; every
    # other read by bitmap scans of the GIN indexes only. With the LIMIT, the planner expects a
    # sequential scan to stop early; for words each common but rare together it reads the whole
    # table (measured on 100 000 lines: 39 ms against 8.5 ms, growing with the archive).
    # Not with an excluded word: the planner does not count it, and where it rules out most of the
    # lines (``und -und``) the read would go to the table's end.
    table_order = (
        postgres
        and not documents
        and not document_facts
        and not query.exclude
        and shares.very_common(word_groups(query, exact=True))
    )
    bitmaps_only = False

    def only_bitmaps() -> None:
        nonlocal bitmaps_only
        if postgres and not bitmaps_only:
            connection.execute(_BITMAP_SCANS_ONLY)
            bitmaps_only = True

    if not table_order:
        only_bitmaps()
    # A person's lines of a common word with a filter the index does not see (a status): the
    # planner walked the documents that pass, intersecting the word's bitmap in the corrected
    # lines' index with each one's lines — that whole bitmap once a document (`ist`, status
    # PARTIAL: 1.2 s). Joined by a hash instead: 25 ms (`ist` with DONE: 9 -> 13 ms).
    hash_the_documents = postgres and not expressed

    def read_persons(exact: bool) -> int:
        nonlocal hash_the_documents
        # A person's lines, a twentieth of all, by their own GIN index, also for a very common word.
        only_bitmaps()
        if hash_the_documents:
            connection.execute(_NO_NESTED_LOOPS)
            hash_the_documents = False
        return read(exact=exact, corrected=True)

    capped = read(exact=True, corrected=False) >= limit
    if not capped and fuzzy:
        # Statistics older than the lines called the word very common, and the cap was not
        # reached: its near spellings by the index (in the table's order they would be read to its end).
        only_bitmaps()
        capped = read(exact=False, corrected=False) >= limit
        if capped:
            read_persons(exact=False)
    elif capped:
        # The near spellings of a person's lines only where the exact ones did not reach the cap
        # (no weaker pass after a capped one: those lines, and documents that have no better
        # line, would rank after all that the exact pass found).
        if read_persons(exact=True) < limit and fuzzy:
            read_persons(exact=False)
    if postgres:
        # Not on a failed read: it aborted the transaction, whose rollback ends the SET LOCALs
        # (a RESET there would fail too, and hide the read's own error).
        connection.execute(_ANY_SCANS)
    return list(seen.values()), capped


# The statements of every search, made once (see _candidates_statement); values bound when run.
_WRITER_ID = select(Writer.id).where(Writer.slug == bindparam("slug"))
# Only the columns shown (not the ORM objects: a page of documents each with its writer).
_DOCUMENTS_SHOWN = (
    select(
        Document.id, Document.title, Document.date, Document.date_precision, Document.status, Writer.slug, Writer.name
    )
    .outerjoin(Writer, Writer.id == Document.writer_id)
    .where(Document.id.in_(bindparam("ids", expanding=True)))
)
_LINES_SHOWN = (
    select(Line.id, Line.text, Line.ocr_text, Line.order_index, Page.number)
    .join(Page, Page.id == Line.page_id)
    .where(Line.id.in_(bindparam("ids", expanding=True)))
)


def search(session: Session, params: SearchParams, limits: SearchLimits) -> SearchOut:
    query = parse(params.q)
    writer_id = None
    if params.writer is not None:
        writer_id = session.connection().scalar(_WRITER_ID, {"slug": params.writer})
        if writer_id is None:  # an unknown writer has written nothing
            return SearchOut(
                query=params.q, total=0, page=params.page, page_size=params.page_size, capped=False, results=[]
            )
    widen(session, query)
    found, capped = _candidates(session, query, params, writer_id, limits.candidate_lines)
    # Best first, so each document's lines come in order and the documents in the order of their best.
    by_document: dict[int, list[_Candidate]] = {}
    for candidate in sorted(found):
        lines = by_document.get(candidate.document_id)
        if lines is None:
            by_document[candidate.document_id] = [candidate]
        else:
            lines.append(candidate)
    ranked = list(by_document)
    first = (params.page - 1) * params.page_size
    shown = ranked[first : first + params.page_size]
    results = _results(session, query, shown, by_document, limits.hits_per_document)
    return SearchOut(
        query=params.q, total=len(ranked), page=params.page, page_size=params.page_size, capped=capped, results=results
    )


def _results(
    session: Session,
    query: Query,
    shown: list[int],
    by_document: dict[int, list[_Candidate]],
    hits_per_document: int,
) -> list[SearchResultOut]:
    if not shown:
        return []
    # Core statements on the session's connection (the ORM's execution costs more than these
    # lookups), their rows unpacked (reading columns by name cost about 0.08 ms a page of results).
    connection = session.connection()
    documents = {row[0]: row for row in connection.execute(_DOCUMENTS_SHOWN, {"ids": shown})}
    hit_ids = [c.line_id for d in shown for c in by_document[d][:hits_per_document]]
    lines = {row[0]: row for row in connection.execute(_LINES_SHOWN, {"ids": hit_ids})}
    results = []
    for document_id in shown:
        _, title, when, precision, status, slug, name = documents[document_id]
        hits = []
        for candidate in by_document[document_id][:hits_per_document]:
            line = lines.get(candidate.line_id)
            if line is None:  # gone since the candidates were read (another transaction)
                continue
            line_id, person, ocr, order_index, page_number = line
            current = person if person is not None else ocr
            spans, _ = highlights(current, query, candidate.joined, candidate.bridge)
            hits.append(
                SearchHitOut(
                    line_id=line_id,
                    page_number=page_number,
                    order_index=order_index,
                    text=current,
                    corrected=person is not None,
                    exact=not candidate.near,
                    highlights=spans,
                    link=f"/documents/{document_id}?page={page_number}&line={line_id}",
                )
            )
        results.append(
            SearchResultOut(
                document=SearchDocumentOut(
                    id=document_id,
                    title=title,
                    writer=SearchWriterOut(slug=slug, name=name) if slug is not None else None,
                    date=when,
                    date_precision=precision,
                    status=status,
                ),
                hit_count=len(by_document[document_id]),
                hits=hits,
            )
        )
    return results
