"""OCR jobs and batches

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import backend.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUS = sa.Enum("QUEUED", "RUNNING", "DONE", "FAILED", "CANCELLED", name="jobstatus", native_enum=False, length=16)


def upgrade() -> None:
    op.create_table(
        "ocr_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("created_at", backend.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_ocr_batches_created_by_users"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ocr_batches")),
    )
    op.create_table(
        "ocr_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=True),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("status", _STATUS, nullable=False),
        sa.Column("model_requested", sa.String(length=100), nullable=True),
        sa.Column("pages_done", sa.Integer(), nullable=False),
        sa.Column("pages_total", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_expires_at", backend.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("created_at", backend.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("started_at", backend.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", backend.db.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["ocr_batches.id"], name=op.f("fk_ocr_jobs_batch_id_ocr_batches"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["document_id"], ["documents.id"], name=op.f("fk_ocr_jobs_document_id_documents"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_ocr_jobs_created_by_users"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ocr_jobs")),
    )
    op.create_index(op.f("ix_ocr_jobs_batch_id"), "ocr_jobs", ["batch_id"])
    op.create_index(op.f("ix_ocr_jobs_document_id"), "ocr_jobs", ["document_id"])
    op.create_index(op.f("ix_ocr_jobs_status"), "ocr_jobs", ["status"])
    op.create_index(op.f("ix_ocr_jobs_lease_expires_at"), "ocr_jobs", ["lease_expires_at"])


def downgrade() -> None:
    op.drop_table("ocr_jobs")
    op.drop_table("ocr_batches")
