"""Recording outcomes on a real database, without HTTP or a broker: claimed
deliveries, then outcomes made by hand, recorded with a fixed clock. What
the rows, the staged events and the metrics say afterwards."""

import json
import random
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from sqlmodel import Session, select

from notifications_service.delivery import statements
from notifications_service.delivery.attempt import Claimed, Outcome
from notifications_service.delivery.schedule import RetryPolicy
from notifications_service.models import DeliveryAttemptRow, DeliveryRow, WebhookEndpointRow
from notifications_service.states import AttemptOutcome, DeliveryState
from shared.db import make_engine
from shared.messaging_models import OutboxMessage, as_utc, utcnow
from shared.migrations import upgrade
from shared.topics import NOTIFICATIONS_DEAD_LETTER, NOTIFICATIONS_DELIVERIES
from tests.notifications.test_dispatcher import add_deliveries

URL = "https://tj.example/hook"
POLICY = RetryPolicy(delays=(30.0, 300.0), jitter=0.0, retry_after_max=3600.0)


@pytest.fixture
def engine(database_url):
    upgrade("notifications_service", database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def claim(engine, count: int = 1, agency: str = "tj-recording") -> list[Claimed]:
    add_deliveries(engine, URL, count, agency=agency)
    now = utcnow()
    lease = now + timedelta(minutes=1)
    with Session(engine) as session:
        ids = statements.claim_work(now, lease, 100, {})(session)
        session.commit()
    return statements.load_claimed(engine, ids, now, lease)


def outcome(claimed: Claimed, kind: AttemptOutcome, status: int | None, **extra) -> Outcome:
    return Outcome(claimed, kind, status, None if kind == AttemptOutcome.DELIVERED else f"HTTP {status}", 12.5,
                   claimed.event_time + timedelta(seconds=1), **extra)


def record(engine, outcomes: list[Outcome], now, *, commit: bool = True) -> None:
    with Session(engine) as session:
        statements.record_outcomes(session, outcomes, policy=POLICY, rng=random.Random(0), now=now)
        if commit:
            session.commit()
        else:
            session.rollback()


def staged(engine) -> list[tuple[str, dict]]:
    with Session(engine) as session:
        rows = session.exec(select(OutboxMessage).order_by(OutboxMessage.id)).all()
    return [(row.topic, json.loads(row.envelope)["data"]) for row in rows]


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_failure_is_rescheduled_from_the_recording_clock(engine):
    [claimed] = claim(engine)
    now = utcnow() + timedelta(hours=1)  # a clock of the test's choosing
    record(engine, [outcome(claimed, AttemptOutcome.FAILED, 500)], now)
    with Session(engine) as session:
        row = session.get(DeliveryRow, claimed.delivery_id)
    assert (row.state, row.attempts, row.schedule_step, row.lease_until) == (DeliveryState.PENDING, 1, 1, None)
    assert as_utc(row.next_attempt_at) == now + timedelta(seconds=30)
    [(topic, data)] = staged(engine)
    assert topic == NOTIFICATIONS_DELIVERIES.name
    assert data["outcome"] == "failed" and data["attempt"] == 1


def test_a_410_kills_the_delivery_and_disables_the_endpoint_it_came_from(engine):
    gone, elsewhere = claim(engine, agency="tj-gone")[0], claim(engine, agency="tj-moved")[0]
    with Session(engine) as session:  # tj-moved registered another URL while its attempt was out
        moved = session.get(WebhookEndpointRow, "tj-moved")
        moved.url = "https://tj.example/new-hook"
        session.add(moved)
        session.commit()
    dead_before = sample("caj_notifications_dead_total")
    gone_before = sample("caj_notifications_deliveries_total", outcome="endpoint_gone")
    record(engine, [outcome(gone, AttemptOutcome.ENDPOINT_GONE, 410),
                    outcome(elsewhere, AttemptOutcome.ENDPOINT_GONE, 410)], utcnow())
    with Session(engine) as session:
        rows = {row.id: row for row in session.exec(select(DeliveryRow)).all()}
        endpoints = {row.agency_id: row for row in session.exec(select(WebhookEndpointRow)).all()}
        attempts = session.exec(select(DeliveryAttemptRow)).all()
    for claimed in (gone, elsewhere):
        row = rows[claimed.delivery_id]
        assert (row.state, row.next_attempt_at) == (DeliveryState.DEAD, None)
        assert as_utc(row.dead_at) == claimed.event_time + timedelta(seconds=1)
    assert endpoints["tj-gone"].enabled is False and "410" in endpoints["tj-gone"].disabled_reason
    assert endpoints["tj-moved"].enabled is True, "the URL registered meanwhile stays enabled"
    assert sorted(attempt.outcome for attempt in attempts) == ["endpoint_gone", "endpoint_gone"]
    topics = [topic for topic, _ in staged(engine)]
    assert topics.count(NOTIFICATIONS_DELIVERIES.name) == 2 and topics.count(NOTIFICATIONS_DEAD_LETTER.name) == 2
    assert sample("caj_notifications_dead_total") == dead_before + 2
    assert sample("caj_notifications_deliveries_total", outcome="endpoint_gone") == gone_before + 2


def test_an_outcome_for_a_delivery_moved_meanwhile_is_not_recorded(engine):
    """A manual retry or another replica got there first: the attempt count
    no longer matches the claim's."""
    [claimed] = claim(engine)
    with Session(engine) as session:
        row = session.get(DeliveryRow, claimed.delivery_id)
        row.attempts = 3
        session.add(row)
        session.commit()
    record(engine, [outcome(claimed, AttemptOutcome.DELIVERED, 200)], utcnow())
    with Session(engine) as session:
        row = session.get(DeliveryRow, claimed.delivery_id)
        assert (row.state, row.attempts) == (DeliveryState.PENDING, 3)
        assert session.exec(select(DeliveryAttemptRow)).all() == []
    assert staged(engine) == []


def test_outcomes_are_counted_only_once_committed(engine):
    first, second = claim(engine, 2)
    delivered_before = sample("caj_notifications_deliveries_total", outcome="delivered")
    latencies_before = sample("caj_notifications_delivery_latency_seconds_count")
    record(engine, [outcome(first, AttemptOutcome.DELIVERED, 200)], utcnow(), commit=False)
    assert sample("caj_notifications_deliveries_total", outcome="delivered") == delivered_before
    record(engine, [outcome(first, AttemptOutcome.DELIVERED, 200), outcome(second, AttemptOutcome.DELIVERED, 200)],
           utcnow())
    assert sample("caj_notifications_deliveries_total", outcome="delivered") == delivered_before + 2
    assert sample("caj_notifications_delivery_latency_seconds_count") == latencies_before + 2
