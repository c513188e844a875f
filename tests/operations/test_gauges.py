"""The gauges the alerts read, computed from a real database when /metrics is
scraped: outbox rows set aside (OutboxRowsSetAside) and the age of the oldest
unpublished one (OutboxUnpublishedTooOld). On SQLite and PostgreSQL."""

from datetime import timedelta

from prometheus_client import REGISTRY
from sqlalchemy import update
from sqlmodel import col

from shared.db import make_engine, transaction
from shared.messaging_models import OutboxMessage, utcnow
from shared.migrations import upgrade
from shared.outbox import NewEvent, stage_events
from shared.service import ServiceRuntime
from shared.settings import ServiceSettings


def _gauge(name: str, service: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"service": service})


def test_outbox_gauges_count_set_aside_rows_and_age_the_oldest_unpublished(database_url):
    upgrade("catalog_service", database_url)
    engine = make_engine(database_url)
    try:
        with transaction(engine) as session:
            stage_events(session, [
                NewEvent(topic="t", key=label, type="org.caj-tracker.test.changed.v1", source="/tests/gauges",
                         subject=label, data={"label": label})
                for label in ("refused", "waiting", "published")
            ])
        now = utcnow()
        with transaction(engine) as session:
            session.execute(update(OutboxMessage).where(col(OutboxMessage.message_key) == "refused")
                            .values(set_aside_at=now, attempts=10, created_at=now - timedelta(hours=2)))
            session.execute(update(OutboxMessage).where(col(OutboxMessage.message_key) == "waiting")
                            .values(created_at=now - timedelta(seconds=90)))
            session.execute(update(OutboxMessage).where(col(OutboxMessage.message_key) == "published")
                            .values(published_at=now, created_at=now - timedelta(hours=1)))
    finally:
        engine.dispose()

    settings = ServiceSettings(service_name="gauge-test", database_url=database_url, log_json=False)
    runtime = ServiceRuntime(settings=settings, migrations_package="catalog_service")
    try:
        runtime.refresh_gauges()
    finally:
        runtime.engine.dispose()
        runtime.read_engine.dispose()
    assert _gauge("caj_outbox_set_aside_rows", "gauge-test") == 1
    assert _gauge("caj_outbox_backlog", "gauge-test") == 1, "set-aside and published rows are not pending"
    # The waiting row's age; neither the older set-aside nor the published row counts.
    assert 90 <= _gauge("caj_outbox_oldest_unpublished_age_seconds", "gauge-test") < 600
