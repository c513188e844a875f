"""Notifications are listed by subject (a request's page shows those about it).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_notifications_subject", "notifications", ["subject"])


def downgrade() -> None:
    op.drop_index("ix_notifications_subject", table_name="notifications")
