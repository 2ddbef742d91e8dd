"""The search index's tables: one row per line, and the vocabulary with its one-deletion variants.

What each database's own search machinery adds lives outside these models (made by migrations
0006, 0008, 0009 and 0010): on SQLite the FTS5 table ``search_fts`` (kept in step with
``search_lines`` and the documents by triggers, through the view ``search_fts_rows``), on
PostgreSQL the ``tsv`` column of ``search_lines`` (the next line's words marked ``>``, the facts
marked ``#`` and set by a trigger) with its GIN indexes (the whole table's, the corrected
lines', two samples').
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from backend.db import Base

# Objects of the engines' search machinery, not described by the models (see the module's doc).
FTS_TABLE = "search_fts"
TSV_COLUMN = "tsv"
TSV_INDEX = "ix_search_lines_tsv"
# PostgreSQL: the same over the corrected lines only (migration 0008), and over every fourth and
# every sixteenth line (migration 0009, backend/search/sampling.py).
TSV_CORRECTED_INDEX = "ix_search_lines_tsv_corrected"
TSV_SAMPLE_INDEXES = ("ix_search_lines_tsv_sample_16", "ix_search_lines_tsv_sample_4")


class SearchLine(Base):
    """A line's folded words, as the index knows them.

    ``own``: the line's folded words, space-separated. ``joined``: where the line ends in a
    hyphenated word (``Weih-``), that word joined with the next line's first (``weihnachten``),
    else empty. ``bridge``: the first words of the next line in reading order (also across a
    page break), so a phrase broken across two lines is found on the line where it starts.
    The rows go with their line (and document) by cascade.
    """

    __tablename__ = "search_lines"
    # Made from the lines: left out of backups and rebuilt by a restore.
    __table_args__ = ({"info": {"backup": "rebuild"}},)

    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id", ondelete="CASCADE"), primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    own: Mapped[str] = mapped_column(Text)
    joined: Mapped[str] = mapped_column(String(200))
    bridge: Mapped[str] = mapped_column(Text)
    # A person's text (corrected lines rank first).
    corrected: Mapped[bool] = mapped_column(Boolean)


class SearchWord(Base):
    """Every folded word the index has seen (never removed: a stale one only widens a lookup)."""

    __tablename__ = "search_words"
    # SQLite: the key is the row (one B-tree, not a table and an index beside it).
    __table_args__ = ({"sqlite_with_rowid": False, "info": {"backup": "rebuild"}},)

    word: Mapped[str] = mapped_column(String(200), primary_key=True)


class SearchVariant(Base):
    """A word and each of its one-character deletions (SymSpell): the words within an edit or two
    of a query word are found by equality lookups on ``variant``."""

    __tablename__ = "search_variants"
    __table_args__ = ({"sqlite_with_rowid": False, "info": {"backup": "rebuild"}},)

    variant: Mapped[str] = mapped_column(String(200), primary_key=True)
    word: Mapped[str] = mapped_column(String(200), primary_key=True)


def not_engine_owned(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic's ``include_object``: leave out the engines' own search objects the models do not describe."""
    if type_ == "table" and name is not None and name.startswith(FTS_TABLE):
        return False
    if type_ == "column" and name == TSV_COLUMN and getattr(obj, "table", None) is not None:
        return str(obj.table.name) != SearchLine.__tablename__
    return not (type_ == "index" and name in (TSV_INDEX, TSV_CORRECTED_INDEX, *TSV_SAMPLE_INDEXES))
