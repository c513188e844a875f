"""The dispatcher in-process, on a real database and a real receiver: what a
graceful stop does to deliveries it has claimed but not sent, the limit on a
broken receiver, and a claim loop that survives its own failures."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from notifications_service.config import NotificationsSettings
from notifications_service.consumers import make_handler
from notifications_service.delivery import Dispatcher, statements
from notifications_service.models import DeliveryRow, NotificationRow, WebhookEndpointRow
from notifications_service.routing import load_rules
from notifications_service.states import DeliveryState
from notifications_service.webhooks import new_secret
from shared.contracts.requests import REQUEST_SUBMITTED, REQUESTS_SOURCE, RequestSubmitted
from shared.db import make_engine
from shared.events import new_event
from shared.group_commit import GroupCommitWriter
from shared.messaging_models import as_utc, utcnow
from shared.migrations import upgrade
from shared.retry import Backoff
from tests.notifications.receiver import Receiver, Reply

AGENCY = "tj-dispatcher-test"


def add_deliveries(engine, url: str, count: int, agency: str = AGENCY) -> list[str]:
    """An endpoint for `agency` and `count` deliveries due now, in order."""
    with Session(engine) as session:
        session.add(WebhookEndpointRow(agency_id=agency, url=url, secret=new_secret()))
        ids = []
        for number in range(count):
            notification = NotificationRow(
                id=str(uuid.uuid4()), event_source="/tests", event_id=f"{agency}-{number}",
                event_type="org.caj-tracker.requests.request.status-changed.v1", recipient=agency,
                payload={"n": number}, event_time=utcnow())
            delivery = DeliveryRow(id=f"msg_{uuid.uuid4().hex}", notification_id=notification.id, agency_id=agency,
                                   event_type=notification.event_type, state=DeliveryState.PENDING,
                                   next_attempt_at=utcnow())
            session.add(notification)
            session.add(delivery)
            ids.append(delivery.id)
        session.commit()
    return ids


@contextlib.asynccontextmanager
async def dispatcher_on(database_url: str, **settings) -> AsyncIterator[tuple[Engine, Dispatcher]]:
    """A migrated database, its group-commit writer, and a dispatcher (not
    started) with `settings` over a local-receiver default."""
    upgrade("notifications_service", database_url)
    engine = make_engine(database_url)
    writer = GroupCommitWriter(engine)
    writer.start()
    settings = NotificationsSettings(**({"webhook_allow_private_addresses": True, "delivery_concurrency": 1,
                                         "webhook_timeout_seconds": 5, "delivery_poll_interval_seconds": 0.2}
                                        | settings))
    dispatcher = Dispatcher(engine=engine, read_engine=engine, writer=writer, settings=settings)
    try:
        yield engine, dispatcher
    finally:
        if dispatcher.running:
            await dispatcher.stop()
        await writer.stop()
        engine.dispose()


async def first_request(receiver: Receiver, path: str) -> None:
    for _ in range(100):
        if receiver.received(path):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing reached {path}")


async def test_a_stop_finishes_the_attempt_in_flight_and_releases_what_it_had_not_sent(database_url):
    """One send slot, so two deliveries claimed (the dispatcher claims a round
    ahead): one being sent when the stop comes, one waiting for the slot. The
    first is recorded; the second is not sent, and its lease is released so
    that it is due at once, not when the lease runs out."""
    async with dispatcher_on(database_url) as (engine, dispatcher):
        with Receiver() as receiver:
            add_deliveries(engine, receiver.script("/slow", Reply(200, delay=1.0)), 4)
            dispatcher.start()
            await first_request(receiver, "/slow")
            with Session(engine) as session:
                claimed = session.exec(select(DeliveryRow.id).where(DeliveryRow.lease_until.is_not(None))).all()
            assert len(claimed) == 2, "one sending, one waiting for the slot"
            await dispatcher.stop()
            assert len(receiver.received("/slow")) == 1, "nothing was sent after the stop"
        sent_id = receiver.received("/slow")[0].headers["webhook-id"]
        [waiting_id] = set(claimed) - {sent_id}
        with Session(engine) as session:
            rows = {row.id: row for row in session.exec(select(DeliveryRow)).all()}
        assert rows[sent_id].state == "delivered" and rows[sent_id].attempts == 1
        assert (rows[waiting_id].state, rows[waiting_id].attempts, rows[waiting_id].lease_until) == ("pending", 0, None)
        assert sum(row.state == "pending" and row.lease_until is None for row in rows.values()) == 3


async def test_a_stop_releases_only_leases_that_are_still_its_own(database_url):
    """A claim whose lease ran out may be held by another dispatcher by the
    time this one stops: its lease is left alone."""
    async with dispatcher_on(database_url) as (engine, dispatcher):
        with Receiver() as receiver:
            add_deliveries(engine, receiver.script("/slow", Reply(200, delay=1.0)), 2)
            dispatcher.start()
            await first_request(receiver, "/slow")
            sent_id = receiver.received("/slow")[0].headers["webhook-id"]
            others_lease = utcnow() + timedelta(minutes=5)
            with Session(engine) as session:
                waiting = session.exec(select(DeliveryRow).where(DeliveryRow.id != sent_id)).one()
                waiting_id = waiting.id
                waiting.lease_until = others_lease  # another dispatcher's claim
                session.add(waiting)
                session.commit()
            await dispatcher.stop()
        with Session(engine) as session:
            lease = session.get(DeliveryRow, waiting_id).lease_until
        assert as_utc(lease) == others_lease


async def test_a_broken_receiver_does_not_hold_every_send_slot(database_url):
    """Four send slots. A broken receiver (every attempt times out) has 20
    deliveries due before a healthy agency's 5. Once its first attempts have
    failed it gets one slot at a time, so the healthy agency's deliveries go
    after at most the 8 attempts already claimed (a round ahead), not after
    all 20."""
    async with dispatcher_on(database_url, delivery_concurrency=4, delivery_concurrency_struggling_endpoint=1,
                             webhook_timeout_seconds=0.5,
                             webhook_retry_schedule_seconds=[60.0]) as (engine, dispatcher):
        with Receiver() as receiver:
            add_deliveries(engine, receiver.script("/broken", *[Reply(200, delay=1.0)] * 20), 20,
                           agency="kz-broken-receiver")
            add_deliveries(engine, receiver.script("/healthy"), 5, agency="kg-healthy-receiver")
            dispatcher.start()
            for _ in range(300):
                if len(receiver.received("/healthy")) == 5:
                    break
                await asyncio.sleep(0.05)
            assert len(receiver.received("/healthy")) == 5
            broken_attempts = len(receiver.received("/broken"))
            assert broken_attempts <= 8 + 1, f"the broken receiver had {broken_attempts} attempts first"


async def delivered(engine, count: int, timeout: float = 15.0) -> None:
    for _ in range(int(timeout / 0.05)):
        with Session(engine) as session:
            done = session.exec(select(DeliveryRow.id).where(DeliveryRow.state == DeliveryState.DELIVERED)).all()
        if len(done) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(done)} of {count} deliveries delivered")


async def test_the_claim_loop_is_a_supervised_worker_that_comes_back_after_a_crash(database_url):
    """A bug that ends the loop does not end delivery: while the loop is down
    the dispatcher says so (and /readyz with it), then it is started again."""
    async with dispatcher_on(database_url) as (engine, dispatcher):
        dispatcher.worker.backoff = Backoff(first=0.05, cap=0.1)
        broken = asyncio.Event()
        broken.set()
        rooms = dispatcher.struggling.rooms

        def rooms_while_broken(unsent):
            if broken.is_set():
                raise RuntimeError("a bug in the claim loop")
            return rooms(unsent)

        dispatcher.struggling.rooms = rooms_while_broken
        with Receiver() as receiver:
            add_deliveries(engine, receiver.script("/after-a-crash"), 3)
            dispatcher.start()
            for _ in range(100):
                if dispatcher.worker.restarts:
                    break
                await asyncio.sleep(0.02)
            assert dispatcher.worker.name == "webhook-dispatcher"
            assert not dispatcher.running and "a bug in the claim loop" in dispatcher.worker.status
            broken.clear()
            await delivered(engine, 3)
            assert dispatcher.running
        assert dispatcher.worker.restarts >= 1


async def test_a_failing_claim_is_retried_by_the_loop_itself(database_url, monkeypatch):
    """The database failing a claim is not a crash: the loop waits (a growing
    backoff) and claims again, and the worker is never restarted."""
    async with dispatcher_on(database_url, delivery_poll_interval_seconds=0.05) as (engine, dispatcher):
        failures = []
        claim_work = statements.claim_work

        def failing_twice(*args):
            if len(failures) < 2:
                failures.append(1)
                raise OperationalError("UPDATE ...", {}, Exception("database is locked"))
            return claim_work(*args)

        monkeypatch.setattr(statements, "claim_work", failing_twice)
        with Receiver() as receiver:
            add_deliveries(engine, receiver.script("/after-a-failed-claim"), 2)
            dispatcher.start()
            await delivered(engine, 2)
        assert len(failures) == 2 and dispatcher.worker.restarts == 0 and dispatcher.running


def submitted_for(agency: str, count: int) -> list:
    """`request.submitted` events whose responsible agency is `agency`."""
    events = []
    for number in range(count):
        data = RequestSubmitted(
            request_id=str(uuid.uuid4()), commitment_id="caj-2006-2-1-04", condition_type="on_request", country="TJ",
            agency_id="tj-border-service", title=f"Request {number}", submitted_at=utcnow(),
            responsible_agencies=[agency])
        events.append(new_event(type=REQUEST_SUBMITTED, source=REQUESTS_SOURCE, subject=data.request_id,
                                data=data.model_dump(mode="json")))
    return events


async def received_on(receiver: Receiver, path: str, count: int) -> list:
    for _ in range(600):
        if len(receiver.received(path)) >= count:
            return receiver.received(path)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path}: {len(receiver.received(path))} requests, expected {count}")


async def test_new_deliveries_are_claimed_as_they_are_created_and_each_sent_once(database_url, monkeypatch):
    """The router leases the deliveries the dispatcher has room for in the
    transaction that creates them and hands them over after the commit:
    each is sent once, with no claim of its own; those beyond the room are
    claimed by the claim loop as before."""
    claimed_by_the_loop: list[str] = []
    claim_work = statements.claim_work

    def counting_claim_work(*args, **kwargs):
        claim = claim_work(*args, **kwargs)

        def claim_and_note(session):
            ids = claim(session)
            claimed_by_the_loop.extend(ids)
            return ids
        return claim_and_note

    monkeypatch.setattr(statements, "claim_work", counting_claim_work)
    async with dispatcher_on(database_url, delivery_concurrency=2) as (engine, dispatcher):
        with Receiver() as receiver:
            add_deliveries(engine, receiver.script("/new"), 0)
            router = make_handler(load_rules(), lambda country: [], dispatcher.wake, hand_off=lambda: dispatcher)
            dispatcher.start()
            # Room for 4 (twice the slots): the first run is taken at once; of
            # the second, what exceeds the room is left to the claim loop.
            first, second = submitted_for(AGENCY, 3), submitted_for(AGENCY, 5)
            await dispatcher.writer.run(lambda session: router.handle_many(session, first))
            await dispatcher.writer.run(lambda session: router.handle_many(session, second))
            received = await received_on(receiver, "/new", 8)
            await dispatcher.stop()  # records the outcomes in flight
        webhook_ids = [request.headers["webhook-id"] for request in received]
        assert len(webhook_ids) == len(set(webhook_ids)) == 8, "each delivery sent once"
        with Session(engine) as session:
            rows = session.exec(select(DeliveryRow)).all()
            first_ids = set(session.exec(select(DeliveryRow.id).join(
                NotificationRow, NotificationRow.id == DeliveryRow.notification_id).where(
                NotificationRow.event_id.in_([event.get_id() for event in first]))).all())
        assert sorted(row.id for row in rows) == sorted(webhook_ids)
        assert all(row.state == "delivered" and row.attempts == 1 for row in rows)
        assert len(first_ids) == 3 and not first_ids & set(claimed_by_the_loop), "handed over, not claimed"
        assert len(claimed_by_the_loop) < 8


async def test_deliveries_handed_over_to_a_stopping_dispatcher_are_released(database_url):
    """Claimed at creation, committed, then the dispatcher stops before it
    takes them over: their leases are released, so they are due at once
    (for a restart, or another replica), not when the lease runs out."""
    async with dispatcher_on(database_url) as (engine, dispatcher):
        with Receiver() as receiver:
            add_deliveries(engine, receiver.script("/late"), 0)
            router = make_handler(load_rules(), lambda country: [], dispatcher.wake, hand_off=lambda: dispatcher)
            dispatcher.start()
            taken_over = dispatcher.take_over
            handed: list[tuple] = []
            dispatcher.take_over = lambda *args: handed.append(args)  # held back until the stop
            events = submitted_for(AGENCY, 2)
            await dispatcher.writer.run(lambda session: router.handle_many(session, events))
            assert len(handed) == 1
            with Session(engine) as session:
                assert all(row.lease_until is not None for row in session.exec(select(DeliveryRow)).all())
            stopping = asyncio.create_task(dispatcher.stop())
            await asyncio.sleep(0)
            taken_over(*handed[0])
            await stopping
            await asyncio.gather(*dispatcher._taking_over)
            assert receiver.received("/late") == []
        with Session(engine) as session:
            rows = session.exec(select(DeliveryRow)).all()
        assert [(row.state, row.attempts, row.lease_until) for row in rows] == [("pending", 0, None)] * 2


async def test_a_delivery_handed_over_at_creation_carries_what_reading_it_back_would_give(database_url):
    """The router hands the dispatcher what sending needs, without reading it
    back: the same as the claim loop's read of the committed rows (body,
    URL, secrets in use, trace, lease), so the first attempt sends what a
    retry sends."""
    async with dispatcher_on(database_url, delivery_concurrency=2) as (engine, dispatcher):  # room for 4
        with Receiver() as receiver:
            add_deliveries(engine, receiver.script("/same"), 0)
            with Session(engine) as session:  # a rotated secret, still in its grace period
                endpoint = session.get(WebhookEndpointRow, AGENCY)
                assert endpoint is not None
                endpoint.previous_secrets = [{"secret": new_secret(),
                                              "expires_at": (utcnow() + timedelta(hours=1)).isoformat()}]
                session.add(endpoint)
                session.commit()
            router = make_handler(load_rules(), lambda country: [], dispatcher.wake, hand_off=lambda: dispatcher)
            dispatcher.start()
            handed: list[list] = []
            dispatcher.take_over = lambda claimed: handed.append(claimed)  # kept, not sent
            await dispatcher.writer.run(lambda session: router.handle_many(session, submitted_for(AGENCY, 3)))
            await dispatcher.stop()
    assert [len(claimed) for claimed in handed] == [3]
    first = handed[0][0]
    read_back = statements.load_claimed(engine, [claimed.delivery_id for claimed in handed[0]], first.claimed_at,
                                        first.lease_until)
    assert read_back == handed[0]
    assert len(first.secrets_in_use) == 2 and first.url == receiver.script("/same")
