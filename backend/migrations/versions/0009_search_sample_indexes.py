"""Search, PostgreSQL: GIN indexes over every fourth and every sixteenth line, where common words are read first

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26

A search judges at most ``APP_SEARCH_CANDIDATE_LINES`` lines (300), but a GIN index answers a
word with the bitmap of every line that holds it, sorted, before the first row is read: for a word
on 40 000–60 000 of 1 000 000 lines that was 7–16 ms of the database's CPU a search, most of what
PostgreSQL spent on the benchmark's mix (a common word with a few years' documents: their years'
bitmaps too, 13 ms). Over every sixteenth line (by key) alone, such a word's bitmap is a sixteenth
as long and still has far more lines than the cap; every fourth line serves a query a little
rarer. The search reads from the sparsest sample the planner's statistics say has enough lines,
and from the whole index where it had too few (backend/search/sampling.py). SQLite's FTS5 steps through
a word's entries lazily and stops at the cap: nothing to do there.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As backend/search/sampling.py reads them (SAMPLES): a query's predicate must be the same
# expression, with the same literal, for the planner to prove that it may use a partial index.
_EVERY = (16, 4)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for every in _EVERY:
            # Straight to the driver (``%%``: psycopg's escape of ``%``).
            op.get_bind().exec_driver_sql(
                f"CREATE INDEX ix_search_lines_tsv_sample_{every} ON search_lines USING gin (tsv) "
                f"WHERE (line_id %% {every}) = 0"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for every in _EVERY:
            op.get_bind().exec_driver_sql(f"DROP INDEX ix_search_lines_tsv_sample_{every}")
