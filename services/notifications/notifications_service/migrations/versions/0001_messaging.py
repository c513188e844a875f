"""Messaging tables: the outbox and the inbox of processed events.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from shared.messaging_schema import create_inbox_v1, create_outbox_v1, drop_inbox_v1, drop_outbox_v1

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_outbox_v1()
    create_inbox_v1()


def downgrade() -> None:
    drop_inbox_v1()
    drop_outbox_v1()
