"""Training runs, the writer's own recognition model, pages a person reviewed, the model an OCR job reads with

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import backend.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_KIND = sa.Enum("recognition", "segmentation", "writer", name="trainingkind", native_enum=False, length=16)
_SOURCE = sa.Enum("requested", "writer", "default", name="modelsource", native_enum=False, length=16)
_STATUS = sa.Enum("QUEUED", "RUNNING", "DONE", "FAILED", "CANCELLED", name="runstatus", native_enum=False, length=16)


def _user_fk(column: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], ["users.id"], name=op.f(f"fk_training_runs_{column}_users"), ondelete="RESTRICT"
    )


def upgrade() -> None:
    op.create_table(
        "training_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", _KIND, nullable=False),
        sa.Column("writer_id", sa.Integer(), nullable=True),
        sa.Column("status", _STATUS, nullable=False),
        sa.Column("active", sa.Boolean(), nullable=True),
        sa.Column("ocr_job_id", sa.String(length=100), nullable=True),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("base_model", sa.String(length=100), nullable=True),
        sa.Column("model_name", sa.String(length=100), nullable=False),
        sa.Column("model_version", sa.String(length=100), nullable=True),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("page_count", sa.Integer(), nullable=False),
        sa.Column("heldout_line_count", sa.Integer(), nullable=False),
        sa.Column("heldout_page_ids", _JSON, nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=True),
        sa.Column("metrics", _JSON, nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.Column("cer", sa.Float(), nullable=True),
        sa.Column("info", _JSON, nullable=False),
        sa.Column("heldout_cer", sa.Float(), nullable=True),
        sa.Column("replaced_model", sa.String(length=100), nullable=True),
        sa.Column("replaced_cer", sa.Float(), nullable=True),
        sa.Column("adopted", sa.Boolean(), nullable=False),
        sa.Column("adopted_at", backend.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("adopted_by", sa.Integer(), nullable=True),
        sa.Column("adoption_note", sa.Text(), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("cancelled_by", sa.Integer(), nullable=True),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_expires_at", backend.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("answered_at", backend.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("created_at", backend.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("started_at", backend.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", backend.db.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["writer_id"], ["writers.id"], name=op.f("fk_training_runs_writer_id_writers"), ondelete="RESTRICT"
        ),
        _user_fk("adopted_by"),
        _user_fk("cancelled_by"),
        _user_fk("created_by"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_runs")),
        sa.UniqueConstraint("active", name=op.f("uq_training_runs_active")),
    )
    op.create_index(op.f("ix_training_runs_kind"), "training_runs", ["kind"])
    op.create_index(op.f("ix_training_runs_status"), "training_runs", ["status"])
    op.create_index(op.f("ix_training_runs_writer_id"), "training_runs", ["writer_id"])
    op.create_index(op.f("ix_training_runs_lease_expires_at"), "training_runs", ["lease_expires_at"])
    with op.batch_alter_table("writers") as batch:
        batch.add_column(sa.Column("model_name", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("model_run_id", sa.Integer(), nullable=True))
    with op.batch_alter_table("pages") as batch:
        batch.add_column(sa.Column("reviewed_at", backend.db.UtcDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("reviewed_by", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            batch.f("fk_pages_reviewed_by_users"), "users", ["reviewed_by"], ["id"], ondelete="RESTRICT"
        )
    with op.batch_alter_table("ocr_jobs") as batch:
        batch.add_column(sa.Column("model_source", _SOURCE, nullable=True))
        batch.add_column(sa.Column("model_used", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("model_note", sa.Text(), nullable=True))

    # Training data without scanning every line: the reviewed pages, and the corrected lines
    # (partial indexes: only the few rows that are either take room in them).
    op.create_index(
        "ix_pages_reviewed_at",
        "pages",
        ["reviewed_at"],
        sqlite_where=sa.text("reviewed_at IS NOT NULL"),
        postgresql_where=sa.text("reviewed_at IS NOT NULL"),
    )
    op.create_index(
        "ix_lines_corrected_page_id",
        "lines",
        ["page_id"],
        sqlite_where=sa.text("text IS NOT NULL"),
        postgresql_where=sa.text("text IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_lines_corrected_page_id", table_name="lines")
    op.drop_index("ix_pages_reviewed_at", table_name="pages")
    with op.batch_alter_table("ocr_jobs") as batch:
        batch.drop_column("model_note")
        batch.drop_column("model_used")
        batch.drop_column("model_source")
    with op.batch_alter_table("pages") as batch:
        batch.drop_constraint(batch.f("fk_pages_reviewed_by_users"), type_="foreignkey")
        batch.drop_column("reviewed_by")
        batch.drop_column("reviewed_at")
    with op.batch_alter_table("writers") as batch:
        batch.drop_column("model_run_id")
        batch.drop_column("model_name")
    op.drop_table("training_runs")
