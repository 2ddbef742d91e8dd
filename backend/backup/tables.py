"""What of the database a backup holds, and which revisions this code knows.

Tables come from the metadata, in dependency order, so a table a later migration adds is backed
up without a change here. A table marked ``info={"backup": "rebuild"}`` (a search index: made
again from the lines) is left out. Only the columns that name stored files are known by name.
"""

from __future__ import annotations

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Table

import backend.models  # noqa: F401  (registers every table on Base.metadata)
from backend.db import Base, alembic_config

# The column holding each document's original (a storage key, made anew by the restore).
ORIGINALS_TABLE = "documents"
ORIGINALS_COLUMN = "storage_key"
# Rendered page images: left out of a backup; cleared, they are rendered again when first shown.
REBUILT_COLUMNS = {"pages": ("image_key", "thumbnail_key")}
REBUILD_MARK = "rebuild"


def backed_up_tables() -> list[Table]:
    return [table for table in Base.metadata.sorted_tables if table.info.get("backup") != REBUILD_MARK]


def left_out_tables() -> list[str]:
    return [table.name for table in Base.metadata.sorted_tables if table.info.get("backup") == REBUILD_MARK]


def known_revisions() -> list[str]:
    """This code's migration revisions, oldest first (the chain is linear)."""
    scripts = ScriptDirectory.from_config(alembic_config())
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]


def current_revision(connection: Connection) -> str | None:
    heads = MigrationContext.configure(connection).get_current_heads()
    if len(heads) > 1:
        raise ValueError(f"the database has several migration heads: {', '.join(heads)}")
    return heads[0] if heads else None
