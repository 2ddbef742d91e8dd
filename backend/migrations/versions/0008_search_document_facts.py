"""Search: each line's document facts (its writer, its year) in the engines' index, kept in step by triggers

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26

A search filtered by writer or by a few years used to read the index's rows for its words one by
one, each joined to its document, until enough passed the filter: for a common word up to every
matching line of the archive (at 1 000 000 lines ~9 ms of a search's ~13). With the facts as
tokens of the line's own row the engine intersects them with the words instead. The filters on
the documents stay in the query as well, so a fact could only ever narrow, never widen, a result.

SQLite: the FTS5 column ``flags`` holds ``c`` (a person's text), ``w<writer id>`` and
``y<year>``, written by the insert trigger from the line's document. PostgreSQL: the same
lexemes with weight C in ``search_lines.tsv``, set by a BEFORE trigger (whatever Python wrote
with weight C is replaced). On both, a trigger on ``documents`` rewrites the facts of a
document's lines when its writer or year changes, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from backend.migrations.search_rows import DOCUMENT_TRIGGER_0008, FACTS_FUNCTION_0008

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As migration 0006 made it.
_SQLITE_FTS = "CREATE VIRTUAL TABLE search_fts USING fts5(own, bridge, flags, tokenize='ascii', detail=column)"
_SQLITE_UP = [
    # Each search_lines row as its FTS5 row: its words, and as flags the corrected mark and its
    # document's facts (left-joined: a row is never dropped for want of them).
    """CREATE VIEW search_fts_rows AS
        SELECT l.line_id, l.own || ' ' || l.joined AS own, l.bridge,
            trim(CASE WHEN l.corrected THEN 'c' ELSE '' END
                || coalesce(' w' || d.writer_id, '')
                || coalesce(' y' || CAST(substr(d.date, 1, 4) AS INTEGER), '')) AS flags
        FROM search_lines l LEFT JOIN documents d ON d.id = l.document_id""",
    "DROP TRIGGER search_lines_fts_insert",
    """CREATE TRIGGER search_lines_fts_insert AFTER INSERT ON search_lines BEGIN
        DELETE FROM search_fts WHERE rowid = new.line_id;
        INSERT INTO search_fts (rowid, own, bridge, flags)
        SELECT line_id, own, bridge, flags FROM search_fts_rows WHERE line_id = new.line_id;
    END""",
    """CREATE TRIGGER documents_search_facts AFTER UPDATE OF writer_id, date ON documents
        WHEN old.writer_id IS NOT new.writer_id OR substr(old.date, 1, 4) IS NOT substr(new.date, 1, 4)
    BEGIN
        UPDATE search_fts SET flags = (SELECT flags FROM search_fts_rows WHERE line_id = search_fts.rowid)
        WHERE rowid IN (SELECT line_id FROM search_lines WHERE document_id = new.id);
    END""",
    # The rows already indexed, into a new table (deleting a million rows from the old one would
    # leave its index to be merged for a long time), merged into one segment.
    "DROP TABLE search_fts",
    _SQLITE_FTS,
    "INSERT INTO search_fts (rowid, own, bridge, flags) SELECT line_id, own, bridge, flags FROM search_fts_rows",
    "INSERT INTO search_fts (search_fts) VALUES ('optimize')",
]
_SQLITE_DOWN = [
    "DROP TRIGGER documents_search_facts",
    "DROP TRIGGER search_lines_fts_insert",
    "DROP VIEW search_fts_rows",
    """CREATE TRIGGER search_lines_fts_insert AFTER INSERT ON search_lines BEGIN
        DELETE FROM search_fts WHERE rowid = new.line_id;
        INSERT INTO search_fts (rowid, own, bridge, flags)
        VALUES (new.line_id, new.own || ' ' || new.joined, new.bridge, CASE WHEN new.corrected THEN 'c' ELSE '' END);
    END""",
    "UPDATE search_fts SET flags = CASE WHEN flags = 'c' OR flags LIKE 'c %' THEN 'c' ELSE '' END",
]

_POSTGRES_UP = [
    FACTS_FUNCTION_0008,
    """CREATE TRIGGER search_lines_facts BEFORE INSERT OR UPDATE OF tsv, corrected, document_id ON search_lines
        FOR EACH ROW EXECUTE FUNCTION search_lines_facts()""",
    """CREATE FUNCTION documents_search_facts() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE search_lines SET tsv = tsv WHERE document_id = new.id;
        RETURN NULL;
    END $$""",
    DOCUMENT_TRIGGER_0008,
    # The rows already indexed, through the trigger; the GIN index made again after (faster
    # than a million updates of it).
    "DROP INDEX ix_search_lines_tsv",
    "UPDATE search_lines SET tsv = tsv",
    "CREATE INDEX ix_search_lines_tsv ON search_lines USING gin (tsv)",
    # The lines with a person's text (they rank first, and are read on their own where a common
    # word has more lines than a search judges): their own, small index.
    "CREATE INDEX ix_search_lines_tsv_corrected ON search_lines USING gin (tsv) WHERE corrected",
]
_POSTGRES_DOWN = [
    "DROP INDEX ix_search_lines_tsv_corrected",
    "DROP TRIGGER documents_search_facts ON documents",
    "DROP FUNCTION documents_search_facts()",
    "DROP TRIGGER search_lines_facts ON search_lines",
    "DROP FUNCTION search_lines_facts()",
    "DROP INDEX ix_search_lines_tsv",
    """UPDATE search_lines SET tsv = ts_filter(tsv, '{a,b}')
        || (CASE WHEN corrected THEN 'c:1C' ELSE '' END)::tsvector""",
    "CREATE INDEX ix_search_lines_tsv ON search_lines USING gin (tsv)",
]


def _run(statements: list[str]) -> None:
    # Straight to the driver: the tsvector literals' ``:1C`` are no bind parameters.
    connection = op.get_bind()
    for statement in statements:
        connection.exec_driver_sql(statement)


def upgrade() -> None:
    _run(_SQLITE_UP if op.get_bind().dialect.name == "sqlite" else _POSTGRES_UP)


def downgrade() -> None:
    _run(_SQLITE_DOWN if op.get_bind().dialect.name == "sqlite" else _POSTGRES_DOWN)
