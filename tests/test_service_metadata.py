"""Each service's tables live in its own metadata, beside copies of the
messaging tables it has: table names are the service's own business, and
each service's migrations build exactly its metadata."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table, create_engine

from catalog_service.models import CatalogTable
from notifications_service.models import NotificationsTable
from requests_service.models import RequestsTable
from shared.contracts.registry import CONSUMERS
from shared.messaging_models import MessagingTable
from shared.migrations import upgrade

METADATA = {
    "catalog": CatalogTable.metadata,
    "requests": RequestsTable.metadata,
    "notifications": NotificationsTable.metadata,
}
OWN_TABLES = {
    "catalog": {"plans", "agencies", "commitments", "progress_reports", "review_meetings", "commitment_activity",
                "commitment_staleness"},
    "requests": {"offers", "requests", "request_history", "idempotency_keys", "offer_interests",
                 "offer_activations", "offer_records"},
    "notifications": {"agency_directory", "notifications", "webhook_endpoints", "webhook_deliveries",
                      "webhook_delivery_attempts"},
}


@pytest.mark.parametrize("service", sorted(METADATA))
def test_a_services_metadata_is_its_tables_with_its_outbox_and_inbox(service):
    # The inbox is for services with a consumer group; all publish through the outbox.
    consumes = any(spec.service == service and spec.group_id for spec in CONSUMERS)
    messaging = {"outbox_messages"} | ({"processed_events"} if consumes else set())
    assert set(METADATA[service].tables) == OWN_TABLES[service] | messaging
    # Copies, with every column of the mapped messaging tables.
    for name in messaging:
        copy, mapped = METADATA[service].tables[name], MessagingTable.metadata.tables[name]
        assert copy is not mapped and [c.name for c in copy.columns] == [c.name for c in mapped.columns]


def test_two_services_may_have_tables_of_the_same_name():
    notifications = MetaData()
    for table in NotificationsTable.metadata.tables.values():
        table.to_metadata(notifications)
    # Raises "Table 'agencies' is already defined" if the catalog's table were here too.
    Table("agencies", notifications, Column("id", Integer, primary_key=True))
    assert "agencies" in CatalogTable.metadata.tables


@pytest.mark.parametrize("package", ["catalog_service", "requests_service", "notifications_service"])
def test_migrations_at_head_build_exactly_the_services_metadata(package, database_url):
    upgrade(package, database_url)
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            differences = compare_metadata(context, METADATA[package.removesuffix("_service")])
    finally:
        engine.dispose()
    assert differences == [], "the models and the migrations disagree: add a migration"
