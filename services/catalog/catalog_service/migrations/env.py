"""Alembic environment of the catalog service (run through shared.migrations)."""

from catalog_service.models import CatalogTable
from shared.migrations import run_env

run_env(CatalogTable.metadata)
