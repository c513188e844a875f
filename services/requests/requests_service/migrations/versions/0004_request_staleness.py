"""Requests remember when they entered their status and the last staleness
period announced for it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("status_since", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("stale_period", sa.Integer(), nullable=False, server_default="0"))
    # Until now only a status change set updated_at: it is when the current status began.
    op.execute("UPDATE requests SET status_since = updated_at")
    with op.batch_alter_table("requests") as batch:
        batch.alter_column("status_since", existing_type=sa.DateTime(timezone=True), nullable=False)
    op.create_index("ix_requests_status_since", "requests", ["status", "status_since"])


def downgrade() -> None:
    op.drop_index("ix_requests_status_since", table_name="requests")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("stale_period")
        batch.drop_column("status_since")
