"""Alembic environment of the notifications service (run through shared.migrations)."""

from sqlmodel import SQLModel

import shared.messaging_models  # noqa: F401  (registers the outbox and inbox tables)
from shared.migrations import run_env

run_env(SQLModel.metadata)
