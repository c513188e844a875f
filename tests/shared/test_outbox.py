"""Acceptance 2: the transactional outbox on the real broker and database."""

import asyncio
import uuid

from aiokafka import TopicPartition

from sqlalchemy import insert, select
from sqlmodel import Session, col

from shared.consumer import IdempotentConsumer
from shared.db import make_engine, transaction
from shared.events import new_event
from shared.kafka import make_producer
from shared.messaging_models import OutboxMessage
from shared.migrations import upgrade
from shared.outbox import OutboxRelay, outbox_backlog, stage_event
from tests.kafka_helpers import create_topic, effects, read_topic, test_metadata, wait_for


def _event(label: str):
    return new_event(type="org.caj-tracker.test.changed.v1", source="/tests/outbox", subject=label, data={"label": label})


async def _started_producer(bootstrap: str):
    producer = make_producer(bootstrap, client_id=f"test-{uuid.uuid4().hex[:6]}")
    await producer.start()
    return producer


async def test_rolled_back_event_is_never_published_and_committed_one_is(kafka_bootstrap, topic_name, database_url):
    upgrade("catalog_service", database_url)
    engine = make_engine(database_url)
    await create_topic(kafka_bootstrap, topic_name)
    producer = await _started_producer(kafka_bootstrap)
    # A long poll interval: only the commit hook can make this test fast.
    relay = OutboxRelay(engine=engine, producer=producer, poll_interval=30.0)
    relay.start()
    try:
        try:
            with transaction(engine) as session:
                stage_event(session, topic=topic_name, key="same-key", event=_event("rolled-back"))
                raise RuntimeError("the state change failed")
        except RuntimeError:
            pass
        with transaction(engine) as session:
            stage_event(session, topic=topic_name, key="same-key", event=_event("committed"))

        records = await read_topic(kafka_bootstrap, topic_name, until=lambda rs: len(rs) >= 1, timeout=20)
        # Same key, one partition, published in id order: had the rolled-back
        # event been published it would stand before the committed one.
        labels = [record.headers for record in records]
        subjects = [dict(headers)["ce_subject"] for headers in labels]
        assert subjects == [b"committed"]
        with Session(engine) as session:
            rows = session.exec(select(OutboxMessage.event_type, OutboxMessage.published_at)).all()
            assert len(rows) == 1 and rows[0][1] is not None
            assert outbox_backlog(session) == (0, 0.0)
    finally:
        await relay.stop()
        await producer.stop()
        engine.dispose()


async def test_commit_wakes_the_relay_without_waiting_for_the_poll(kafka_bootstrap, topic_name, database_url):
    upgrade("catalog_service", database_url)
    engine = make_engine(database_url)
    await create_topic(kafka_bootstrap, topic_name)
    producer = await _started_producer(kafka_bootstrap)
    relay = OutboxRelay(engine=engine, producer=producer, poll_interval=60.0)
    relay.start()
    try:
        await asyncio.sleep(0.5)  # the relay is now idle, waiting for a wake-up
        with transaction(engine) as session:
            stage_event(session, topic=topic_name, key="k", event=_event("prompt"))

        def published() -> bool:
            with Session(engine) as session:
                return outbox_backlog(session)[0] == 0

        assert await wait_for(published, timeout=10), "the relay did not wake on commit"
    finally:
        await relay.stop()
        await producer.stop()
        engine.dispose()


class RelayCrashed(BaseException):
    """Stands for the process dying: not an Exception, so nothing catches it."""


class RelayThatCrashesAfterSending(OutboxRelay):
    def _mark_published(self, ids):
        raise RelayCrashed()


async def test_crash_between_send_and_mark_repeats_the_event_but_the_effect_happens_once(
    kafka_bootstrap, topic_name, database_url
):
    upgrade("requests_service", database_url)
    engine = make_engine(database_url)
    test_metadata.create_all(engine)
    await create_topic(kafka_bootstrap, topic_name, partitions=3)
    await create_topic(kafka_bootstrap, topic_name + ".dlq")
    producer = await _started_producer(kafka_bootstrap)
    event = _event("activate-once")
    with transaction(engine) as session:
        stage_event(session, topic=topic_name, key="caj-2006-2-2-04", event=event)

    crashing = RelayThatCrashesAfterSending(engine=engine, producer=producer, poll_interval=0.2)
    crashing.start()
    crash = await asyncio.wait_for(asyncio.gather(crashing._task, return_exceptions=True), timeout=30)
    assert isinstance(crash[0], RelayCrashed)
    # A dead process's database connection and files close, releasing its publisher lock.
    if crashing._leader_connection is not None:
        crashing._leader_connection.invalidate()
        crashing._leader_connection = None
    if crashing._leader_file is not None:
        crashing._leader_file.close()
        crashing._leader_file = None
    with Session(engine) as session:
        assert session.exec(select(OutboxMessage.published_at)).one()[0] is None, "row must still be unpublished"

    restarted = OutboxRelay(engine=engine, producer=producer, poll_interval=0.2)
    restarted.start()

    def apply_effect(session, received):
        session.execute(insert(effects).values(event_id=received.get_id(), payload=str(received.get_data())))

    consumer = IdempotentConsumer(
        engine=engine, bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic_name}", client_id="test",
        topics=[topic_name], handler=apply_effect, producer=producer, dead_letter_topic=topic_name + ".dlq",
    )
    await consumer.start()
    try:
        # The broker holds the event twice: once from each relay.
        records = await read_topic(kafka_bootstrap, topic_name, until=lambda rs: len(rs) >= 2, timeout=30)
        assert [dict(r.headers)["ce_id"] for r in records] == [event.get_id().encode()] * 2

        # Wait until the consumer has committed past both copies: it has seen the duplicate.
        partition = TopicPartition(topic_name, records[-1].partition)
        for _ in range(300):
            if await consumer.consumer.committed(partition) == records[-1].offset + 1:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("consumer did not get past the repeated event")
        with Session(engine) as session:
            rows = session.execute(select(effects.c.event_id)).all()
            assert rows == [(event.get_id(),)]
            assert session.exec(select(col(OutboxMessage.published_at))).one()[0] is not None
    finally:
        await consumer.stop()
        await restarted.stop()
        await producer.stop()
        engine.dispose()


def _leads(relay: OutboxRelay) -> bool:
    return relay._leader_connection is not None or relay._leader_file is not None


async def test_one_relay_publishes_and_another_takes_over(kafka_bootstrap, topic_name, database_url):
    """Several replicas share one outbox: a lock (an advisory lock on
    PostgreSQL, a file lock beside a SQLite database) makes one of them the
    publisher, so per-key order holds and nothing goes out twice; when it
    stops, another takes over. Each relay has its own engine, as replicas do."""
    upgrade("catalog_service", database_url)
    engine, other_engine = make_engine(database_url), make_engine(database_url)
    await create_topic(kafka_bootstrap, topic_name, partitions=1)
    producer = await _started_producer(kafka_bootstrap)
    first = OutboxRelay(engine=engine, producer=producer, poll_interval=0.2)
    second = OutboxRelay(engine=other_engine, producer=producer, poll_interval=0.2)
    first.start()
    second.start()
    try:
        for number in range(20):
            with transaction(engine) as session:
                stage_event(session, topic=topic_name, key="one-key", event=_event(f"{number:02d}"))
        records = await read_topic(kafka_bootstrap, topic_name, until=lambda rs: len(rs) >= 20, timeout=30)
        assert [dict(r.headers)["ce_subject"].decode() for r in records] == [f"{n:02d}" for n in range(20)]
        leaders = [relay for relay in (first, second) if _leads(relay)]
        assert len(leaders) == 1, "exactly one relay publishes"

        await leaders[0].stop()
        follower = second if leaders[0] is first else first
        for number in range(20, 25):
            with transaction(engine) as session:
                stage_event(session, topic=topic_name, key="one-key", event=_event(f"{number:02d}"))
        records = await read_topic(kafka_bootstrap, topic_name, until=lambda rs: len(rs) >= 25, timeout=30)
        assert [dict(r.headers)["ce_subject"].decode() for r in records] == [f"{n:02d}" for n in range(25)]
        assert _leads(follower)
    finally:
        await first.stop()
        await second.stop()
        await producer.stop()
        engine.dispose()
        other_engine.dispose()


def test_backlog_and_age_of_the_oldest_unpublished_row(database_url):
    """What /metrics reports when the relay is stuck: rows pile up and age."""
    import time

    upgrade("catalog_service", database_url)
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            assert outbox_backlog(session) == (0, 0.0)
        for label in ("a", "b"):
            with transaction(engine) as session:
                stage_event(session, topic="t", key="k", event=_event(label))
        time.sleep(0.3)
        with Session(engine) as session:
            count, age = outbox_backlog(session)
        assert count == 2 and 0.3 <= age < 30
    finally:
        engine.dispose()


async def test_a_row_the_broker_refuses_stops_the_batch_without_resending_the_rows_before_it(
    kafka_bootstrap, topic_name, database_url
):
    upgrade("catalog_service", database_url)
    engine = make_engine(database_url)
    await create_topic(kafka_bootstrap, topic_name)
    producer = await _started_producer(kafka_bootstrap)
    with transaction(engine) as session:
        stage_event(session, topic=topic_name, key="k", event=_event("good-1"))
        # Over the producer's 1 MB request limit: refused before it is sent.
        big = new_event(type="org.caj-tracker.test.changed.v1", source="/tests/outbox", subject="too-big",
                        data={"blob": "x" * 2_000_000})
        stage_event(session, topic=topic_name, key="k", event=big)
        stage_event(session, topic=topic_name, key="k", event=_event("good-3"))
    relay = OutboxRelay(engine=engine, producer=producer, poll_interval=0.1)
    relay.start()
    try:
        def attempts_on_big() -> int:
            with Session(engine) as session:
                return session.execute(select(OutboxMessage.attempts).order_by(OutboxMessage.id)).scalars().all()[1]

        assert await wait_for(lambda: attempts_on_big() >= 3, timeout=30), "the relay keeps trying the failed row"
        records = await read_topic(kafka_bootstrap, topic_name, until=lambda rs: len(rs) >= 2, timeout=3)
        assert [dict(r.headers)["ce_subject"] for r in records] == [b"good-1"], (
            "good-1 sent once; good-3 waits behind the failed row (per-key order)"
        )
        with Session(engine) as session:
            rows = session.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars().all()
        assert rows[0].published_at is not None and rows[0].attempts == 1
        assert rows[1].published_at is None and "MessageSizeTooLarge" in (rows[1].last_error or "")
        assert rows[2].published_at is None and rows[2].attempts == 0
    finally:
        await relay.stop()
        await producer.stop()
        engine.dispose()
