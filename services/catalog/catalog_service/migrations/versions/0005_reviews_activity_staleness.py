"""Review meetings; the inbox and the read model of requests and activations
(from requests.events); the staleness period announced for each commitment.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from shared.messaging_schema import create_inbox_v1, drop_inbox_v1

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_meetings",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("plan_id", sa.String(64), sa.ForeignKey("plans.id", ondelete="CASCADE"), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column("place", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=True),
        sa.Column("source_url", sa.String(2000), nullable=True),
        sa.Column("recorded_by_key_id", sa.String(16), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_review_meetings_plan_date", "review_meetings", ["plan_id", "date"])
    create_inbox_v1()
    op.create_table(
        "commitment_activity",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("commitment_id", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("countries", sa.JSON(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_commitment_activity_commitment_id", "commitment_activity", ["commitment_id"])
    op.create_table(
        "commitment_staleness",
        sa.Column("commitment_id", sa.String(100), primary_key=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("commitment_staleness")
    op.drop_index("ix_commitment_activity_commitment_id", table_name="commitment_activity")
    op.drop_table("commitment_activity")
    drop_inbox_v1()
    op.drop_index("ix_review_meetings_plan_date", table_name="review_meetings")
    op.drop_table("review_meetings")
