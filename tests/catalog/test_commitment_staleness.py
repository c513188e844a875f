"""Stale commitments on the catalog's database (SQLite and PostgreSQL), on a
clock the test sets: in implementation (or an activated offer) with nothing
reported for the staleness period, announced once per period however many
checks and replicas run; the running service announcing on the broker; and
the list's `stale` filter agreeing with the announcements for an offer
activated through requests.events."""

import asyncio
import json
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlmodel import Session, col, select

from catalog_service.activations import handle_requests_event
from catalog_service.config import CatalogSettings
from catalog_service.main import create_app
from catalog_service.plan_files import load_plan_file
from catalog_service.reporting import ProgressCreate, new_report_id, record_report
from catalog_service.staleness import check_stale_commitments, stale_commitments
from catalog_service.sync import sync_plans
from shared.contracts.catalog import COMMITMENT_STALE, CommitmentStale
from shared.contracts.requests import OFFER_ACTIVATED, REQUESTS_SOURCE
from shared.db import make_engine
from shared.events import from_kafka, new_event
from shared.identity import Principal
from shared.kafka import make_producer
from shared.messaging_models import OutboxMessage
from shared.migrations import upgrade
from tests.kafka_helpers import read_topic, send_event, started_writer

SYNTHETIC = Path(__file__).parent / "fixtures" / "synthetic-plan-2030.yaml"
SYNTHETIC_PLAN_FILES = json.dumps([str(SYNTHETIC)])
COORDINATOR = Principal(key_id="0" * 16, role="coordinator", agency_id=None, country=None)
N = timedelta(days=180)
T0 = datetime(2031, 3, 1, 9, 30, tzinfo=UTC)
ADOPTED = datetime(2030, 1, 15, tzinfo=UTC)
WATER, METERING, TRADE = "synthetic-2030-1-0-02", "synthetic-2030-1-0-01", "synthetic-2030-2-0-01"


@pytest.fixture
def engine(database_url):
    upgrade("catalog_service", database_url)
    engine = make_engine(database_url)
    sync_plans(engine, [load_plan_file(SYNTHETIC)], clock=lambda: ADOPTED)
    yield engine
    engine.dispose()


def report(engine, commitment_id: str, status: str, at: datetime) -> None:
    body = ProgressCreate(status=status, as_of=at.date(), summary="Reported in a test.")
    with Session(engine) as session:
        record_report(session, principal=COORDINATOR, commitment_id=commitment_id, body=body,
                      report_id=new_report_id(), now=at)
        session.commit()


def activate(engine, commitment_id: str, at: datetime) -> None:
    event = new_event(type=OFFER_ACTIVATED, source=REQUESTS_SOURCE, subject=commitment_id, data={
        "commitment_id": commitment_id, "condition_type": "on_request", "countries": ["KG"], "trigger": "request",
        "trigger_id": "r-1", "responsible_agencies": ["jp-mofa"], "activated_at": at.isoformat()})
    with Session(engine) as session:
        assert handle_requests_event(session, event) == "processed"
        session.commit()


def staged(engine) -> list[CommitmentStale]:
    """The commitment.stale events in the outbox, oldest first, checked against the contract."""
    with Session(engine) as session:
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.event_type == COMMITMENT_STALE)
                            .order_by(col(OutboxMessage.id))).all()
    events = []
    for row in rows:
        envelope = json.loads(row.envelope)
        assert row.topic == "catalog.progress" and row.message_key == envelope["subject"]
        events.append(CommitmentStale.model_validate(envelope["data"]))
    return events


async def check(writer, engine, now: datetime) -> list[CommitmentStale]:
    return await check_stale_commitments(writer=writer, read_engine=engine, now=now, stale_after=N)


def gauge(pillar: int) -> float | None:
    return REGISTRY.get_sample_value("caj_catalog_stale_commitments", {"pillar": str(pillar)})


async def test_in_implementation_with_no_report_for_n_days_once_per_period(engine):
    reported_at = T0
    report(engine, WATER, "implementation", reported_at)
    report(engine, TRADE, "closed", reported_at)  # closed never goes stale
    async with started_writer(engine) as writer:
        assert await check(writer, engine, reported_at + N - timedelta(seconds=1)) == []
        first = await check(writer, engine, reported_at + N)
        assert [(e.commitment_id, e.period, e.stale_since, e.status) for e in first] == [
            (WATER, 1, reported_at + N, "implementation")]
        assert first[0].pillar == 1 and first[0].last_reported_at == reported_at
        assert first[0].responsible_agencies and gauge(1) == 1 and gauge(2) == 0
        for hours in range(1, 6):  # more checks in the same period announce nothing
            assert await check(writer, engine, reported_at + N + timedelta(hours=hours)) == []
        second = await check(writer, engine, reported_at + 2 * N + timedelta(days=1))
        assert [(e.commitment_id, e.period) for e in second] == [(WATER, 1 + 1)]

        # A new report starts counting again, from period 1.
        again = reported_at + 2 * N + timedelta(days=2)
        report(engine, WATER, "implementation", again)
        assert await check(writer, engine, again + N - timedelta(minutes=1)) == []
        assert gauge(1) == 0
        third = await check(writer, engine, again + N)
        assert [(e.commitment_id, e.period, e.last_reported_at) for e in third] == [(WATER, 1, again)]
    assert [(e.commitment_id, e.period) for e in staged(engine)] == [(WATER, 1), (WATER, 2), (WATER, 1)]


async def test_never_reported_counts_from_the_plans_adoption_and_an_activated_offer_goes_stale(engine):
    # METERING is pipeline by the text: only its activation makes it expected to report.
    activated_at = ADOPTED + timedelta(days=10)
    activate(engine, METERING, activated_at)
    assert stale_commitments(engine, activated_at + N - timedelta(seconds=1), N) == []
    due = stale_commitments(engine, activated_at + N, N)
    assert [(item.event.commitment_id, item.event.status, item.event.last_reported_at) for item in due] == [
        (METERING, "pipeline", None)]
    # Reported on after its activation: it counts from the report; closed, it is done.
    report(engine, METERING, "implementation", activated_at + timedelta(days=30))
    assert stale_commitments(engine, activated_at + N, N) == []
    report(engine, METERING, "closed", activated_at + timedelta(days=31))
    assert stale_commitments(engine, activated_at + 5 * N, N) == []


async def test_two_replicas_checking_at_once_announce_each_period_once(engine, database_url):
    other = make_engine(database_url)
    try:
        for commitment_id in (WATER, TRADE, METERING):
            report(engine, commitment_id, "implementation", T0)
        async with started_writer(engine) as writer, started_writer(other) as other_writer:
            for now in (T0 + N, T0 + 2 * N):
                results = await asyncio.gather(check(writer, engine, now), check(other_writer, other, now),
                                               check(writer, engine, now))
                assert sum(map(len, results)) == 3
    finally:
        other.dispose()
    assert sorted((e.commitment_id, e.period) for e in staged(engine)) == sorted(
        (commitment_id, period) for commitment_id in (WATER, TRADE, METERING) for period in (1, 2))


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def wait_until(condition, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what}: never happened"
        time.sleep(0.05)
    return result


def stale_events_of(bootstrap: str, commitment_id: str, until) -> list:
    """The commitment's events on catalog.progress, read until `until(events)` holds."""
    def ours(records):
        events = [from_kafka(key=r.key, value=r.value, headers=r.headers) for r in records]
        return [e for e in events if e.get_subject() == commitment_id]

    return ours(asyncio.run(read_topic(bootstrap, "catalog.progress", until=lambda rs: until(ours(rs)), timeout=60)))


def test_the_service_checks_by_itself_and_publishes_each_period_once(tmp_path, kafka_bootstrap):
    database_url = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    upgrade("catalog_service", database_url)
    engine = make_engine(database_url)
    sync_plans(engine, [load_plan_file(SYNTHETIC)], clock=lambda: ADOPTED)
    # Unique to this test on the shared broker: a day no other test reports on.
    reported_at = datetime(2031, 7, 9, 8, 0, tzinfo=UTC)
    report(engine, WATER, "implementation", reported_at)
    engine.dispose()
    clock = FakeClock(reported_at + timedelta(days=1))
    settings = CatalogSettings(database_url=database_url, kafka_bootstrap_servers=kafka_bootstrap, log_json=False,
                               plan_files=[SYNTHETIC], stale_check_seconds=0.05, outbox_poll_interval_seconds=0.2)
    app = create_app(settings, clock=clock)
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, "ready")
        watch = app.state.stale_commitments
        assert watch.worker in app.state.runtime.workers() and watch.worker.running
        clock.now = reported_at + N
        checks = watch.completed_checks
        wait_until(lambda: watch.completed_checks >= checks + 20, "twenty checks in the period")
        clock.now = reported_at + 2 * N
        events = stale_events_of(kafka_bootstrap, WATER, lambda events: any(
            CommitmentStale.model_validate(e.get_data()).period == 2 for e in events
            if e.get_type() == COMMITMENT_STALE and CommitmentStale.model_validate(e.get_data()).last_reported_at
            == reported_at))
    ours = [CommitmentStale.model_validate(e.get_data()) for e in events if e.get_type() == COMMITMENT_STALE]
    ours = [event for event in ours if event.last_reported_at == reported_at]
    assert [event.period for event in ours] == [1, 2], "one event per period, not one per check"
    assert ours[0].stale_since == reported_at + N


def publish_activation(bootstrap: str, commitment_id: str, at: datetime) -> None:
    """An offer.activated event on requests.events, as the requests service publishes it."""
    async def publish() -> None:
        producer = make_producer(bootstrap, client_id="staleness-test")
        await producer.start()
        try:
            await send_event(producer, "requests.events", new_event(
                type=OFFER_ACTIVATED, source=REQUESTS_SOURCE, subject=commitment_id, data={
                    "commitment_id": commitment_id, "condition_type": "on_request", "countries": ["KG"],
                    "trigger": "request", "trigger_id": "r-activation", "responsible_agencies": ["jp-mofa"],
                    "activated_at": at.isoformat()}), key=commitment_id)
        finally:
            await producer.stop()

    asyncio.run(publish())


def test_the_stale_filter_and_the_stale_event_agree_on_an_offer_activated_through_requests_events(
        database_url, tmp_path, kafka_bootstrap):
    upgrade("catalog_service", database_url)
    engine = make_engine(database_url)
    sync_plans(engine, [load_plan_file(SYNTHETIC)], clock=lambda: ADOPTED)
    engine.dispose()
    # METERING is pipeline by the text and never reported on: only its activation can make it stale.
    # A moment unique to this run on the shared broker.
    activated_at = datetime(2032, 4, 7, tzinfo=UTC) + timedelta(seconds=random.randrange(300 * 86400))
    clock = FakeClock(activated_at + timedelta(days=1))
    settings = CatalogSettings(database_url=database_url, kafka_bootstrap_servers=kafka_bootstrap, log_json=False,
                               plan_files=[SYNTHETIC], stale_check_seconds=0.05, snapshot_refresh_seconds=0.05,
                               outbox_poll_interval_seconds=0.2)
    app = create_app(settings, clock=clock)

    def stale_ids() -> set[str]:
        response = client.get("/v1/commitments", params={"stale": "true", "limit": 100})
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["items"]}

    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, "ready")
        assert METERING not in stale_ids()
        publish_activation(kafka_bootstrap, METERING, activated_at)
        # The consumer stores it; the snapshot's refresh picks it up.
        wait_until(lambda: app.state.catalog.activations.get(METERING) == activated_at, "the activation reached "
                   "the served snapshot")
        watch = app.state.stale_commitments
        clock.now = activated_at + N - timedelta(seconds=1)
        checks = watch.completed_checks
        wait_until(lambda: watch.completed_checks >= checks + 5, "checks just before the period")
        assert METERING not in stale_ids(), "not stale a second before the period"
        assert not [e for e in staged(app.state.runtime.engine) if e.commitment_id == METERING]
        clock.now = activated_at + N
        assert METERING in stale_ids(), "the filter: stale from its activation plus the period"
        # The other backend's run shares the broker: this run's event is told by its moment.
        stale_events_of(kafka_bootstrap, METERING, lambda events: any(
            e.get_type() == COMMITMENT_STALE
            and CommitmentStale.model_validate(e.get_data()).stale_since == activated_at + N for e in events))
        checks = watch.completed_checks
        wait_until(lambda: watch.completed_checks >= checks + 5, "more checks in the same period")
        announced = [e for e in staged(app.state.runtime.engine) if e.commitment_id == METERING]
    assert [(event.period, event.stale_since, event.status) for event in announced] == [
        (1, activated_at + N, "pipeline")], "the event: the same moment as the filter, once"


def test_the_settings_have_the_issues_defaults():
    settings = CatalogSettings()
    assert settings.stale_after_days == 180 and settings.stale_check_seconds == 300
