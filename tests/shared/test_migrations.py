"""Acceptance 6: every service's migrations go from an empty database to
head and back down, on SQLite and PostgreSQL."""

import pytest
from sqlalchemy import create_engine, inspect

from shared.migrations import current_revision, downgrade, head_revision, upgrade

EXPECTED_TABLES = {
    "catalog_service": {"outbox_messages", "processed_events", "review_meetings", "commitment_activity",
                        "commitment_staleness"},
    "requests_service": {"outbox_messages", "processed_events"},
    "notifications_service": {"outbox_messages", "processed_events", "agency_directory", "notifications"},
}


@pytest.mark.parametrize("service_package", sorted(EXPECTED_TABLES))
def test_upgrade_to_head_and_back_down(service_package, database_url):
    engine = create_engine(database_url)
    try:
        assert set(inspect(engine).get_table_names()) == set()

        upgrade(service_package, database_url)
        tables = set(inspect(engine).get_table_names())
        assert EXPECTED_TABLES[service_package] | {"alembic_version"} <= tables
        assert current_revision(engine) == head_revision(service_package)
        upgrade(service_package, database_url)  # a second upgrade is a no-op
        assert current_revision(engine) == head_revision(service_package)

        downgrade(service_package, database_url, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        assert current_revision(engine) is None

        upgrade(service_package, database_url)  # and up again from base
        assert EXPECTED_TABLES[service_package] <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
