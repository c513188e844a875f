"""Alembic environment of the notifications service (run through shared.migrations)."""

from notifications_service.models import NotificationsTable
from shared.migrations import run_env

run_env(NotificationsTable.metadata)
