"""Full-text search: the index of every line's folded words, its vocabulary, and the engines' own index

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from backend.migrations.search_rows import REWRITE_WEIGHTED

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite: an FTS5 table over the folded words (the ascii tokenizer: folded words are letters and
# digits, each one token as it is; detail=column: column filters, no positions to store), kept in
# step with search_lines by triggers, also when a cascade deletes the row.
_SQLITE = [
    "CREATE VIRTUAL TABLE search_fts USING fts5(own, bridge, flags, tokenize='ascii', detail=column)",
    """CREATE TRIGGER search_lines_fts_insert AFTER INSERT ON search_lines BEGIN
        DELETE FROM search_fts WHERE rowid = new.line_id;
        INSERT INTO search_fts (rowid, own, bridge, flags)
        VALUES (new.line_id, new.own || ' ' || new.joined, new.bridge, CASE WHEN new.corrected THEN 'c' ELSE '' END);
    END""",
    """CREATE TRIGGER search_lines_fts_delete AFTER DELETE ON search_lines BEGIN
        DELETE FROM search_fts WHERE rowid = old.line_id;
    END""",
]


def upgrade() -> None:
    op.create_table(
        "search_lines",
        sa.Column("line_id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("own", sa.Text(), nullable=False),
        sa.Column("joined", sa.String(length=200), nullable=False),
        sa.Column("bridge", sa.Text(), nullable=False),
        sa.Column("corrected", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"], ["documents.id"], name=op.f("fk_search_lines_document_id_documents"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["line_id"], ["lines.id"], name=op.f("fk_search_lines_line_id_lines"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("line_id", name=op.f("pk_search_lines")),
    )
    op.create_index(op.f("ix_search_lines_document_id"), "search_lines", ["document_id"], unique=False)
    op.create_table(
        "search_words",
        sa.Column("word", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("word", name=op.f("pk_search_words")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "search_variants",
        sa.Column("variant", sa.String(length=200), nullable=False),
        sa.Column("word", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("variant", "word", name=op.f("pk_search_variants")),
        sqlite_with_rowid=False,
    )
    if op.get_bind().dialect.name == "sqlite":
        for statement in _SQLITE:
            op.execute(statement)
    else:
        op.execute("ALTER TABLE search_lines ADD COLUMN tsv tsvector NOT NULL")
        op.execute("CREATE INDEX ix_search_lines_tsv ON search_lines USING gin (tsv)")
    # The lines already stored: indexed now, by the folding this revision ships.
    from backend.search.index import index_everything_on

    index_everything_on(op.get_bind())
    if op.get_bind().dialect.name == "postgresql":
        # This revision's format (the code of the day writes the newest; see search_rows.py).
        op.get_bind().exec_driver_sql(REWRITE_WEIGHTED)
        op.get_bind().exec_driver_sql("UPDATE search_lines SET tsv = tsv || 'c:1C'::tsvector WHERE corrected")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER search_lines_fts_delete")
        op.execute("DROP TRIGGER search_lines_fts_insert")
        op.execute("DROP TABLE search_fts")
    op.drop_table("search_variants")
    op.drop_table("search_words")
    op.drop_index(op.f("ix_search_lines_document_id"), table_name="search_lines")
    op.drop_table("search_lines")
