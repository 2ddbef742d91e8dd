"""OCR job control: cancel, discard corrections on a re-run, the pace of a run

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import backend.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite cannot add a foreign key to an existing table, so it rebuilds the
    # table; PostgreSQL gets plain ALTER TABLE statements.
    with op.batch_alter_table("ocr_jobs") as batch:
        batch.add_column(sa.Column("pages_at_claim", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("discard_corrections", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.add_column(sa.Column("corrections_discarded", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("cancelled_by", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            batch.f("fk_ocr_jobs_cancelled_by_users"), "users", ["cancelled_by"], ["id"], ondelete="RESTRICT"
        )
    op.create_table(
        "discarded_corrections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("page_number", sa.Integer(), nullable=False),
        sa.Column("order_index", sa.Integer(), nullable=False),
        sa.Column("line_id", sa.Integer(), nullable=False),
        sa.Column("ocr_text", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("corrected_by", sa.Integer(), nullable=True),
        sa.Column("corrected_at", backend.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("history", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("discarded_by", sa.Integer(), nullable=False),
        sa.Column("discarded_at", backend.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name=op.f("fk_discarded_corrections_document_id_documents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["corrected_by"],
            ["users.id"],
            name=op.f("fk_discarded_corrections_corrected_by_users"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["discarded_by"],
            ["users.id"],
            name=op.f("fk_discarded_corrections_discarded_by_users"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_discarded_corrections")),
    )
    op.create_index(op.f("ix_discarded_corrections_document_id"), "discarded_corrections", ["document_id"])


def downgrade() -> None:
    # 0002 knows no PARTIAL: a cancel left the document NEW there (its pages keep their lines).
    op.execute(sa.text("UPDATE documents SET status = 'NEW' WHERE status = 'PARTIAL'"))
    op.drop_table("discarded_corrections")
    with op.batch_alter_table("ocr_jobs") as batch:
        batch.drop_constraint(batch.f("fk_ocr_jobs_cancelled_by_users"), type_="foreignkey")
        batch.drop_column("cancelled_by")
        batch.drop_column("corrections_discarded")
        batch.drop_column("discard_corrections")
        batch.drop_column("pages_at_claim")
