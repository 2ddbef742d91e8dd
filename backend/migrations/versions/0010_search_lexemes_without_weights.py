"""Search, PostgreSQL: lexemes without weights (the next line's words and the facts marked), trashed documents as a fact

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27

Up to 0009 a row's ``tsv`` told the line's own words (weight A) from the next line's (B) and
the facts (C) by weights. A GIN index holds no weights: for a query that names one it returns
every row holding the lexeme at all, and PostgreSQL read each of them and checked it again — for a
common word about half of them in vain (the word only on the next line). And a trashed document
was known only to ``documents``: every search joined its lines to their documents, a lookup a
line. Measured on the benchmark's 1 000 000 lines (the mix's candidate statements, replayed):
4.4 ms of the server's CPU a search before, 2.4 ms with both changes.

From here the next line's words are lexemes of their own, marked ``>`` (``>mutter``), and the facts
marked ``#``: ``#c`` (a person's text), ``#w<writer>``, ``#y<year>``, and ``#t`` for a line of a
trashed document. Folded words are letters and digits only, so no mark is a word. The BEFORE
trigger on ``search_lines`` puts the facts in (whatever Python wrote marked ``#`` is replaced); the
trigger on ``documents`` renews a document's lines when its writer, its year or whether it is
trashed changes. A search whose filters the facts express exactly reads no document at all.
SQLite's FTS5 is not changed.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from backend.migrations.search_rows import (
    DOCUMENT_TRIGGER_0008,
    FACTS_FUNCTION_0008,
    REWRITE_MARKED,
    REWRITE_WEIGHTED,
)

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The GIN indexes over ``tsv`` (0008, 0009), dropped while every row is rewritten (faster than a
# million updates of them) and made again after.
_INDEXES = {
    "ix_search_lines_tsv": "",
    "ix_search_lines_tsv_corrected": "WHERE corrected",
    "ix_search_lines_tsv_sample_16": "WHERE (line_id %% 16) = 0",
    "ix_search_lines_tsv_sample_4": "WHERE (line_id %% 4) = 0",
}

# The document's row is locked while its lines are indexed (the lock a change of its own row
# takes): a line written while another transaction trashes the document (or changes its writer
# or year) waits for that one and reads what it committed; a change of the document made while
# its lines are written waits for them, and its trigger then renews them too. Without the lock
# each side would miss the other's uncommitted rows, and a trashed document's new line would be
# found (a search that the facts decide reads no document).
_FACTS = """CREATE OR REPLACE FUNCTION search_lines_facts() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        writer integer;
        written date;
        trashed boolean;
    BEGIN
        SELECT d.writer_id, d.date, d.deleted_at IS NOT NULL INTO writer, written, trashed
        FROM documents d WHERE d.id = new.document_id FOR NO KEY UPDATE;
        new.tsv := array_to_tsvector(
            ARRAY(SELECT lexeme FROM unnest(new.tsv) WHERE left(lexeme, 1) <> '#')
            || array_remove(ARRAY[
                CASE WHEN new.corrected THEN '#c' END,
                '#w' || writer,
                '#y' || extract(year FROM written)::int,
                CASE WHEN trashed THEN '#t' END], NULL));
        RETURN new;
    END $$"""

_DOCUMENT_TRIGGER = """CREATE TRIGGER documents_search_facts AFTER UPDATE OF writer_id, date, deleted_at ON documents
        FOR EACH ROW WHEN (old.writer_id IS DISTINCT FROM new.writer_id
            OR extract(year FROM old.date) IS DISTINCT FROM extract(year FROM new.date)
            OR (old.deleted_at IS NULL) <> (new.deleted_at IS NULL))
        EXECUTE FUNCTION documents_search_facts()"""


def _rebuild(statements: list[str]) -> None:
    # Straight to the driver (``%%``: psycopg's escape of ``%``).
    connection = op.get_bind()
    for name in _INDEXES:
        connection.exec_driver_sql(f"DROP INDEX {name}")
    for statement in statements:
        connection.exec_driver_sql(statement)
    for name, where in _INDEXES.items():
        connection.exec_driver_sql(f"CREATE INDEX {name} ON search_lines USING gin (tsv) {where}")
    # The search reads the most common lexemes' shares from the statistics (sampling.py).
    connection.exec_driver_sql("ANALYZE search_lines")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _rebuild(
            [
                _FACTS,
                "DROP TRIGGER documents_search_facts ON documents",
                _DOCUMENT_TRIGGER,
                REWRITE_MARKED,
            ]
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _rebuild(
            [
                FACTS_FUNCTION_0008,
                "DROP TRIGGER documents_search_facts ON documents",
                DOCUMENT_TRIGGER_0008,
                REWRITE_WEIGHTED,
            ]
        )
