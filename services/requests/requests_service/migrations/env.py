"""Alembic environment of the requests service (run through shared.migrations)."""

from requests_service.models import RequestsTable
from shared.migrations import run_env

run_env(RequestsTable.metadata)
