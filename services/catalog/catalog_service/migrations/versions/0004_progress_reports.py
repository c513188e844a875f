"""Progress reports (append-only), and the current progress each commitment's
published record carries.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "progress_reports",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("commitment_id", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.Column("supersedes", sa.String(36), nullable=True),
        sa.Column("reporter_key_id", sa.String(16), nullable=False),
        sa.Column("reporter_role", sa.String(16), nullable=False),
        sa.Column("reporter_agency_id", sa.String(64), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_progress_reports_id", "progress_reports", ["id"], unique=True)
    op.create_index("ix_progress_reports_commitment_id", "progress_reports", ["commitment_id"])
    op.create_index("ix_progress_reports_supersedes", "progress_reports", ["supersedes"], unique=True)
    # Null: no record with progress published yet; the next start publishes one.
    with op.batch_alter_table("commitments") as batch:
        batch.add_column(sa.Column("progress", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("commitments") as batch:
        batch.drop_column("progress")
    op.drop_index("ix_progress_reports_supersedes", table_name="progress_reports")
    op.drop_index("ix_progress_reports_commitment_id", table_name="progress_reports")
    op.drop_index("ix_progress_reports_id", table_name="progress_reports")
    op.drop_table("progress_reports")
