"""Alembic environment: migrations run on the connection ``backend.db.migrate`` hands in."""

from __future__ import annotations

from alembic import context

import backend.models  # noqa: F401  (registers every table on Base.metadata)
from backend.db import Base
from backend.search.models import not_engine_owned

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_object=not_engine_owned,
)
with context.begin_transaction():
    context.run_migrations()
