"""Stale requests: one `request.stale.v1` per staleness period, counted from
the last status change, with the time from an injected clock."""

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import get_args

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlmodel import Session, col, select

from requests_service import metrics
from requests_service.config import RequestsSettings
from requests_service.consumers import handle_catalog_event
from requests_service.main import create_app
from requests_service.models import RequestRow
from requests_service.service import NewRequest, submit_request, transition_request
from requests_service.staleness import (
    WAITING_STATUSES,
    _claim_and_stage,
    _due,
    check_stale_requests,
    period_start,
    staleness_period,
)
from shared.contracts.requests import REQUEST_STALE, REQUEST_STATUS_CHANGED, RequestStale, RequestStatus
from shared.db import make_engine
from shared.events import from_kafka
from shared.identity import Principal
from shared.messaging_models import OutboxMessage, as_utc
from shared.migrations import downgrade, upgrade
from tests.kafka_helpers import read_topic, started_writer
from tests.requests.conftest import auth
from tests.requests.test_offers_read_model import BORDER, TAJIK_AGENCY, published

DAYS = 30
N = timedelta(days=DAYS)
T0 = datetime(2027, 3, 1, 9, 30, tzinfo=UTC)
COORDINATOR = Principal(key_id="c" * 16, role="coordinator", agency_id=None, country=None)
TICK = timedelta(microseconds=1)
# How a coordinator (or, for `withdrawn`, the requesting agency) gets a new request to each status.
PATHS = {
    "submitted": [],
    "under_review": ["under_review"],
    "info_requested": ["under_review", "info_requested"],
    "approved": ["under_review", "approved"],
    "in_progress": ["under_review", "approved", "in_progress"],
    "fulfilled": ["under_review", "approved", "in_progress", "fulfilled"],
    "declined": ["declined"],
    "withdrawn": ["withdrawn"],
}


class FakeClock:
    """The service's clock in these tests: it reads what the test set."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# -- the period arithmetic ----------------------------------------------------------
def test_a_period_covers_n_days_from_the_status_change():
    assert staleness_period(T0, T0, N) == 0
    assert staleness_period(T0, T0 + N - TICK, N) == 0
    assert staleness_period(T0, T0 + N, N) == 1
    assert staleness_period(T0, T0 + 2 * N - TICK, N) == 1
    assert staleness_period(T0, T0 + 2 * N, N) == 2
    assert staleness_period(T0, T0 + 7 * N + timedelta(days=3), N) == 7
    assert staleness_period(T0, T0 - timedelta(days=400), N) == 0, "a clock behind the change: not stale"
    assert period_start(T0, 1, N) == T0 + N and period_start(T0, 3, N) == T0 + 3 * N
    for period in range(1, 5):  # each period begins where the arithmetic says it does
        assert staleness_period(T0, period_start(T0, period, N), N) == period
        assert staleness_period(T0, period_start(T0, period, N) - TICK, N) == period - 1
    with pytest.raises(ValueError):
        staleness_period(T0, T0, timedelta(0))


# -- the check, on a real database -------------------------------------------------------
@pytest.fixture
def engine(database_url):
    upgrade("requests_service", database_url)
    engine = make_engine(database_url)
    with Session(engine) as session:  # the offer, as the catalog publishes it
        handle_catalog_event(session, published(1))
        session.commit()
    yield engine
    engine.dispose()


async def new_request(writer, status: str, at: datetime) -> str:
    request = await writer.run(lambda session: submit_request(
        session, principal=TAJIK_AGENCY, new=NewRequest(BORDER.id, f"Waiting while {status}", "x"), now=at))
    await move(writer, request.id, *PATHS[status], at=at)
    return request.id


async def move(writer, request_id: str, *statuses: str, at: datetime) -> None:
    for status in statuses:
        mover = TAJIK_AGENCY if status == "withdrawn" else COORDINATOR
        await writer.run(lambda session, status=status, mover=mover: transition_request(
            session, principal=mover, request_id=request_id, to_status=status,
            note="not needed" if status == "declined" else None, now=at))


def staged_stale_events(engine) -> list[RequestStale]:
    """The request.stale events in the outbox, oldest first, checked against the contract."""
    with Session(engine) as session:
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.event_type == REQUEST_STALE)
                            .order_by(col(OutboxMessage.id))).all()
    events = []
    for row in rows:
        envelope = json.loads(row.envelope)
        assert row.topic == "requests.events" and row.message_key == envelope["subject"]
        events.append(RequestStale.model_validate(envelope["data"]))
        assert events[-1].request_id == row.message_key, "keyed by request id"
    return events


def stale_gauge() -> dict[str, float]:
    return {status: REGISTRY.get_sample_value("caj_requests_stale", {"status": status})
            for status in WAITING_STATUSES}


def refresh_gauge(engine, now: datetime) -> dict[str, float]:
    with Session(engine) as session:
        metrics.refresh_stale(session, now=now, stale_after=N)
    return stale_gauge()


async def test_a_request_waiting_in_each_status_becomes_stale_after_n_days_and_no_other_does(engine):
    async with started_writer(engine) as writer:
        ids = {status: await new_request(writer, status, T0) for status in PATHS}

        async def check(now):
            return await check_stale_requests(writer=writer, read_engine=engine, now=now, stale_after=N)

        assert await check(T0 + N - TICK) == []
        assert refresh_gauge(engine, T0 + N - TICK) == dict.fromkeys(WAITING_STATUSES, 0)

        announced = await check(T0 + N)
        assert {event.request_id: event.status for event in announced} == {ids[s]: s for s in WAITING_STATUSES}
        assert refresh_gauge(engine, T0 + N) == dict.fromkeys(WAITING_STATUSES, 1)
        for event in announced:
            assert (event.period, event.status_since, event.stale_since) == (1, T0, T0 + N)
            assert (event.commitment_id, event.country, event.agency_id) == (BORDER.id, "TJ", "tj-border-service")
            assert event.responsible_agencies == [agency.id for agency in BORDER.responsible_agencies]
        assert staged_stale_events(engine) == announced, "staged in the outbox as announced"

        # Long after, still only the waiting ones.
        later = await check(T0 + 10 * N)
        assert sorted(event.request_id for event in later) == sorted(ids[s] for s in WAITING_STATUSES)
        assert {event.period for event in later} == {10}


async def test_one_event_per_period_however_many_checks_run(engine):
    async with started_writer(engine) as writer:
        request_id = await new_request(writer, "under_review", T0)
        for moment in (T0 + N, T0 + N, T0 + N + timedelta(days=1), T0 + N + timedelta(days=17), T0 + 2 * N - TICK):
            await check_stale_requests(writer=writer, read_engine=engine, now=moment, stale_after=N)
        assert [(e.request_id, e.period) for e in staged_stale_events(engine)] == [(request_id, 1)]

        for moment in (T0 + 2 * N, T0 + 2 * N + timedelta(hours=5), T0 + 3 * N - TICK):
            await check_stale_requests(writer=writer, read_engine=engine, now=moment, stale_after=N)
        events = staged_stale_events(engine)
        assert [(e.period, e.stale_since) for e in events] == [(1, T0 + N), (2, T0 + 2 * N)]

        # The checks stopped for a while: the period it is now is announced, once.
        for _ in range(3):
            await check_stale_requests(writer=writer, read_engine=engine, now=T0 + 5 * N + timedelta(days=3),
                                       stale_after=N)
        assert [e.period for e in staged_stale_events(engine)] == [1, 2, 5]


async def test_a_status_change_starts_counting_again(engine):
    async with started_writer(engine) as writer:
        request_id = await new_request(writer, "submitted", T0)

        async def check(now):
            return [(e.status, e.period, e.status_since) for e in await check_stale_requests(
                writer=writer, read_engine=engine, now=now, stale_after=N)]

        assert await check(T0 + N) == [("submitted", 1, T0)]
        changed = T0 + N + timedelta(days=5)
        await move(writer, request_id, "under_review", at=changed)
        assert refresh_gauge(engine, changed) == dict.fromkeys(WAITING_STATUSES, 0)
        assert await check(changed) == []
        assert await check(T0 + 2 * N) == [], "the old status's second period is gone with it"
        assert await check(changed + N - TICK) == []
        assert await check(changed + N) == [("under_review", 1, changed)]
        assert refresh_gauge(engine, changed + N) == {"submitted": 0, "under_review": 1, "info_requested": 0}

        await move(writer, request_id, "approved", at=changed + N + timedelta(days=1))
        assert await check(changed + 9 * N) == [], "an approved request waits on no one"
        assert [(e.status, e.period) for e in staged_stale_events(engine)] == [("submitted", 1), ("under_review", 1)]


async def test_two_replicas_checking_at_once_announce_each_period_once(engine, database_url):
    """Two replicas (each its own engine and writer on the one database) read
    the same due requests, then both claim them: each period is staged once.
    On PostgreSQL the second claim waits for the first one's row locks."""
    other_engine = make_engine(database_url)
    try:
        async with started_writer(engine) as writer, started_writer(other_engine) as other_writer:
            ids = [await new_request(writer, "submitted", T0 + timedelta(minutes=i)) for i in range(30)]
            now = T0 + N + timedelta(hours=1)
            due_here, due_there = _due(engine, now, N), _due(other_engine, now, N)
            assert len(due_here) == len(due_there) == 30
            here, there = await asyncio.gather(
                writer.run(lambda session: _claim_and_stage(session, due_here, now)),
                other_writer.run(lambda session: _claim_and_stage(session, due_there, now)))
            assert len(here) + len(there) == 30
            # And through the public check, racing from the start.
            later = T0 + 2 * N + timedelta(hours=1)
            results = await asyncio.gather(*(
                check_stale_requests(writer=w, read_engine=e, now=later, stale_after=N)
                for w, e in ((writer, engine), (other_writer, other_engine), (writer, engine))))
            assert sum(map(len, results)) == 30
        events = staged_stale_events(engine)
        assert sorted((e.request_id, e.period) for e in events) == sorted(
            [(i, 1) for i in ids] + [(i, 2) for i in ids])
    finally:
        other_engine.dispose()


async def test_a_status_change_between_reading_and_claiming_is_not_announced(engine):
    """The check read the request as stale; before its claim commits, the
    request moves on, and back to the same status. Nothing is announced for
    the status it had, and the new one gets its own first period later."""
    async with started_writer(engine) as writer:
        request_id = await new_request(writer, "under_review", T0)
        now = T0 + N + timedelta(days=2)
        due = _due(engine, now, N)
        assert [item.event.request_id for item in due] == [request_id]
        await move(writer, request_id, "info_requested", "under_review", at=now)
        assert await writer.run(lambda session: _claim_and_stage(session, due, now)) == []
        with Session(engine) as session:
            row = session.get(RequestRow, request_id)
            assert row is not None and row.status == "under_review" and row.stale_period == 0
        announced = await check_stale_requests(writer=writer, read_engine=engine, now=now + N, stale_after=N)
        assert [(e.status, e.period) for e in announced] == [("under_review", 1)]
        assert len(staged_stale_events(engine)) == 1


def test_existing_requests_count_from_their_last_status_change(database_url):
    """Before migration 0004 only a status change set updated_at: requests
    already there get it as status_since, and nothing announced yet."""
    upgrade("requests_service", database_url, "0003")
    engine = make_engine(database_url)
    changed = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
    try:
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO requests (id, commitment_id, country, agency_id, title, description, status,"
                " created_by_key, created_at, updated_at) VALUES ('r-1', :commitment, 'TJ', 'tj-border-service',"
                " 'Border posts', 'x', 'under_review', 'k', :created, :changed)"),
                {"commitment": BORDER.id, "created": changed - timedelta(days=3), "changed": changed})
        upgrade("requests_service", database_url)
        with Session(engine) as session:
            row = session.get(RequestRow, "r-1")
            assert row is not None and as_utc(row.status_since) == changed and row.stale_period == 0
        downgrade("requests_service", database_url, "0003")
        upgrade("requests_service", database_url)
    finally:
        engine.dispose()


# -- the running service: its own periodic check, the broker, /metrics, /readyz ----------------
def wait_until(condition, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what}: never happened"
        time.sleep(0.05)
    return result


def events_of(bootstrap: str, request_id: str, until) -> list:
    def ours(records):
        events = [from_kafka(key=r.key, value=r.value, headers=r.headers) for r in records
                  if dict(r.headers).get("ce_subject") == request_id.encode()]
        return [e for e in events if e.get_data().get("request_id") == request_id]

    return ours(asyncio.run(read_topic(bootstrap, "requests.events", until=lambda rs: until(ours(rs)), timeout=60)))


def gauge_line(client, status: str) -> str:
    return next(line for line in client.get("/metrics").text.splitlines()
                if line.startswith(f'caj_requests_stale{{status="{status}"}}'))


def test_the_service_checks_by_itself_and_publishes_each_period_once(database_url, kafka_bootstrap, keys):
    upgrade("requests_service", database_url)
    engine = make_engine(database_url)
    with Session(engine) as session:
        handle_catalog_event(session, published(1))
        session.commit()
    engine.dispose()
    clock = FakeClock(T0)
    settings = RequestsSettings(database_url=database_url, kafka_bootstrap_servers=kafka_bootstrap, log_json=False,
                                stale_check_seconds=0.05, outbox_poll_interval_seconds=0.2)
    app = create_app(settings, clock=clock)
    tajik = keys.make("partner", country="TJ", agency="tj-border-service")
    coordinator = keys.make("coordinator")
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, "ready")
        wait_until(lambda: client.get("/v1/requests", headers=auth(tajik)).status_code == 200, "key known")
        created = client.post("/v1/requests", headers=auth(tajik), json={
            "commitment_id": BORDER.id, "title": "Border posts", "description": "Equipment for 3 posts."})
        assert created.status_code == 201, created.text
        request_id = created.json()["id"]
        watch = app.state.stale_requests
        assert watch.worker in app.state.runtime.workers() and watch.worker.running
        assert gauge_line(client, "submitted").endswith(" 0.0")

        clock.now = T0 + N
        stale = events_of(kafka_bootstrap, request_id, lambda events: any(
            e.get_type() == REQUEST_STALE for e in events))
        assert gauge_line(client, "submitted").endswith(" 1.0")
        # Many more checks in the same period, then a status change: its event
        # comes after whatever those checks published.
        checks = watch.completed_checks
        wait_until(lambda: watch.completed_checks >= checks + 10, "ten more checks")
        moved = client.post(f"/v1/requests/{request_id}/transitions", headers=auth(coordinator),
                            json={"to": "under_review"})
        assert moved.status_code == 200, moved.text
        events = events_of(kafka_bootstrap, request_id, lambda events: any(
            e.get_type() == REQUEST_STATUS_CHANGED for e in events))
        stale = [e for e in events if e.get_type() == REQUEST_STALE]
        assert len(stale) == 1, "one event for the period, not one per check"
        announced = RequestStale.model_validate(stale[0].get_data())
        assert (announced.status, announced.period, announced.status_since) == ("submitted", 1, T0)
        assert stale[0].get_subject() == request_id and stale[0].get_time() == T0 + N
        assert gauge_line(client, "submitted").endswith(" 0.0")
        assert gauge_line(client, "under_review").endswith(" 0.0")

        clock.now = T0 + 2 * N
        events = events_of(kafka_bootstrap, request_id, lambda events: sum(
            e.get_type() == REQUEST_STALE for e in events) == 2)
        second = RequestStale.model_validate([e for e in events if e.get_type() == REQUEST_STALE][-1].get_data())
        assert (second.status, second.period, second.status_since) == ("under_review", 1, T0 + N)
        assert gauge_line(client, "under_review").endswith(" 1.0")


def test_the_list_filters_stale_requests_by_the_same_rule(database_url, kafka_bootstrap, keys):
    """GET /v1/requests?stale=true: waiting with no status change for the
    period, by the service's clock; a status change, or a status nobody
    waits in, takes a request off it; country scope still applies."""
    upgrade("requests_service", database_url)
    engine = make_engine(database_url)
    with Session(engine) as session:
        handle_catalog_event(session, published(1))
        session.commit()
    engine.dispose()
    clock = FakeClock(T0)
    settings = RequestsSettings(database_url=database_url, kafka_bootstrap_servers=kafka_bootstrap, log_json=False)
    app = create_app(settings, clock=clock)
    tajik = keys.make("partner", country="TJ", agency="tj-border-service")
    kazakh = keys.make("partner", country="KZ", agency="kz-mfa")
    coordinator = keys.make("coordinator")

    def stale_ids(key: str, stale: str = "true") -> set[str]:
        response = client.get("/v1/requests", headers=auth(key), params={"stale": stale})
        assert response.status_code == 200, response.text
        assert response.json()["total"] == len(response.json()["items"])
        return {item["id"] for item in response.json()["items"]}

    def summary(key: str) -> dict:
        response = client.get("/v1/requests/summary", headers=auth(key))
        assert response.status_code == 200, response.text
        return response.json()

    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, "ready")
        for key in (tajik, kazakh, coordinator):
            wait_until(lambda key=key: client.get("/v1/requests", headers=auth(key)).status_code == 200, "key known")
        ids = []
        for title in ("Border posts", "Training"):
            created = client.post("/v1/requests", headers=auth(tajik), json={
                "commitment_id": BORDER.id, "title": title, "description": "Equipment for 3 posts."})
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        waiting, approved = ids
        assert stale_ids(coordinator) == set()
        assert stale_ids(coordinator, "false") == {waiting, approved}

        clock.now = T0 + N - TICK
        assert stale_ids(coordinator) == set(), "not before the period is over"
        clock.now = T0 + N
        assert stale_ids(coordinator) == {waiting, approved}
        assert stale_ids(tajik) == {waiting, approved}
        assert stale_ids(kazakh) == set(), "another country's requests stay out of sight"
        # The summary counts by the same rule, in the same scope.
        assert summary(coordinator)["stale"] == summary(tajik)["stale"] == 2
        assert summary(kazakh) == {"total": 0, "stale": 0, "by_country": {},
                                   "by_status": dict.fromkeys(get_args(RequestStatus), 0)}

        for to in ("under_review", "approved"):
            moved = client.post(f"/v1/requests/{approved}/transitions", headers=auth(coordinator), json={"to": to})
            assert moved.status_code == 200, moved.text
        clock.now = T0 + 5 * N
        assert stale_ids(coordinator) == {waiting}, "approved: nobody waits on an answer"
        assert stale_ids(coordinator, "false") == {approved}
        counted = summary(tajik)
        assert (counted["total"], counted["stale"], counted["by_country"]) == (2, 1, {"TJ": 2})
        assert {status: n for status, n in counted["by_status"].items() if n} == {"submitted": 1, "approved": 1}
        invalid = client.get("/v1/requests", headers=auth(coordinator), params={"stale": "perhaps"})
        assert invalid.status_code == 422


class BrokenClock(FakeClock):
    def __init__(self, now: datetime) -> None:
        super().__init__(now)
        self.broken = False

    def __call__(self) -> datetime:
        if self.broken:
            raise RuntimeError("no time to be had")
        return self.now


def test_readyz_names_the_stale_check_while_it_is_down(tmp_path, kafka_bootstrap):
    database_url = f"sqlite:///{tmp_path / 'requests.sqlite3'}"
    upgrade("requests_service", database_url)
    clock = BrokenClock(T0)
    settings = RequestsSettings(database_url=database_url, kafka_bootstrap_servers=kafka_bootstrap, log_json=False,
                                stale_check_seconds=0.05)
    app = create_app(settings, clock=clock)
    with TestClient(app) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, "ready")
        clock.broken = True
        down = wait_until(lambda: (r := client.get("/readyz")).status_code == 503 and r.json(), "503")
        assert "stale-requests" in down["checks"]["workers"]["detail"]
        assert "no time to be had" in down["checks"]["workers"]["detail"]
        clock.broken = False
        wait_until(lambda: client.get("/readyz").status_code == 200, "ready again")
        assert app.state.stale_requests.worker.restarts >= 1


def test_the_settings_have_the_issues_defaults():
    settings = RequestsSettings()
    assert settings.stale_after_days == 30 and settings.stale_check_seconds == 300
    with pytest.raises(ValueError):
        RequestsSettings(stale_after_days=0)
