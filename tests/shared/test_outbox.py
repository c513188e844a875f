"""Acceptance 2: the transactional outbox on the real broker and database."""

import asyncio
import json
import time
import uuid

from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from prometheus_client import REGISTRY
from sqlalchemy import insert, select
from sqlmodel import Session, col
from typer.testing import CliRunner

from caj.cli import app as caj_app
from shared.consumer import IdempotentConsumer
from shared.db import make_engine, transaction
from shared.group_commit import GroupCommitWriter
from shared.kafka import make_producer
from shared.messaging_models import OutboxMessage
from shared.migrations import upgrade
from shared.outbox import NewEvent, OutboxRelay, outbox_backlog, outbox_set_aside_count, stage_events
from shared.retry import Backoff
from tests.kafka_helpers import create_topic, effects, read_topic, records_on, test_metadata, wait_for


def _stage(session, *, topic: str, key: str, label: str, data: dict | None = None) -> str:
    """Stage one test event whose subject is `label`; its id."""
    [event_id] = stage_events(session, [NewEvent(
        topic=topic, key=key, type="org.caj-tracker.test.changed.v1", source="/tests/outbox", subject=label,
        data={"label": label} if data is None else data,
    )])
    return event_id


def _subjects(records) -> list[bytes]:
    return [dict(record.headers)["ce_subject"] for record in records]


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
                _stage(session, topic=topic_name, key="same-key", label="rolled-back")
                raise RuntimeError("the state change failed")
        except RuntimeError:
            pass
        with transaction(engine) as session:
            _stage(session, topic=topic_name, key="same-key", label="committed")

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


class RelayThatSaysWhenIdle(OutboxRelay):
    """Sets `idle` once a round found nothing to publish: the relay then
    waits for a wake-up (or its poll interval)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.idle = asyncio.Event()

    async def publish_pending(self) -> int:
        published = await super().publish_pending()
        if published == 0:
            self.idle.set()
        return published


async def test_commit_wakes_the_relay_without_waiting_for_the_poll(kafka_bootstrap, topic_name, database_url):
    upgrade("catalog_service", database_url)
    engine = make_engine(database_url)
    await create_topic(kafka_bootstrap, topic_name)
    producer = await _started_producer(kafka_bootstrap)
    relay = RelayThatSaysWhenIdle(engine=engine, producer=producer, poll_interval=60.0)
    relay.start()
    try:
        await asyncio.wait_for(relay.idle.wait(), timeout=30)  # its first round is over: only a wake-up moves it now
        with transaction(engine) as session:
            _stage(session, topic=topic_name, key="k", label="prompt")

        def published() -> bool:
            with Session(engine) as session:
                return outbox_backlog(session)[0] == 0

        assert await wait_for(published, timeout=10), "the relay did not wake on commit"
    finally:
        await relay.stop()
        await producer.stop()
        engine.dispose()


class RelayMarkingSlowly(OutboxRelay):
    """Each batch takes a while to be marked published, so the next rounds
    load and send while it is being marked."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.batches_marked = 0

    def _mark_published(self, ids):
        time.sleep(0.3)
        super()._mark_published(ids)
        self.batches_marked += 1


async def test_rows_committed_while_a_batch_is_being_marked_go_out_once_each_in_order(
    kafka_bootstrap, topic_name, database_url
):
    """The relay marks a batch published while the next rounds load and
    send: the rows being marked must not be sent again, none may be left
    behind, and each key keeps its order."""
    upgrade("catalog_service", database_url)
    engine = make_engine(database_url)
    await create_topic(kafka_bootstrap, topic_name, partitions=3)
    producer = await _started_producer(kafka_bootstrap)
    relay = RelayMarkingSlowly(engine=engine, producer=producer, poll_interval=30.0)
    relay.start()
    staged: list[str] = []
    try:
        for number in range(30):
            with transaction(engine) as session:
                staged.append(_stage(session, topic=topic_name, key=f"key-{number % 3}", label=f"{number:02d}"))
            await asyncio.sleep(0.02)

        def all_marked() -> bool:
            with Session(engine) as session:
                return outbox_backlog(session)[0] == 0

        assert await wait_for(all_marked, timeout=30), "rows were left unpublished"
        assert relay.batches_marked >= 2  # the commits came while batches were being marked
    finally:
        await relay.stop()  # nothing is sent after this
        await producer.stop()
        engine.dispose()
    total = await records_on(kafka_bootstrap, topic_name)
    records = await read_topic(kafka_bootstrap, topic_name, until=lambda rs: len(rs) >= total, timeout=30)
    event_ids = [dict(record.headers)["ce_id"].decode() for record in records]
    assert sorted(event_ids) == sorted(staged), "each row is published exactly once"
    for key in ("key-0", "key-1", "key-2"):
        labels = [dict(r.headers)["ce_subject"] for r in records if r.key == key.encode()]
        assert labels == sorted(labels) and len(labels) == 10


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
    with transaction(engine) as session:
        event_id = _stage(session, topic=topic_name, key="caj-2006-2-2-04", label="activate-once")

    crashing = RelayThatCrashesAfterSending(engine=engine, producer=producer, poll_interval=0.2)
    crashing.start()
    # Not an Exception: the supervisor lets it end the worker, as a dying process would.
    crash = await asyncio.wait_for(asyncio.gather(crashing.worker._task, return_exceptions=True), timeout=30)
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

    writer = GroupCommitWriter(engine)
    writer.start()
    consumer = IdempotentConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic_name}", client_id="test", topics=[topic_name],
        handler=apply_effect, producer=producer, dead_letter_topic=topic_name + ".dlq", writer=writer,
    )
    await consumer.start()
    try:
        # The broker holds the event twice: once from each relay.
        records = await read_topic(kafka_bootstrap, topic_name, until=lambda rs: len(rs) >= 2, timeout=30)
        assert [dict(r.headers)["ce_id"] for r in records] == [event_id.encode()] * 2

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
            assert rows == [(event_id,)]
            assert session.exec(select(col(OutboxMessage.published_at))).one()[0] is not None
    finally:
        await consumer.stop()
        await writer.stop()
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
                _stage(session, topic=topic_name, key="one-key", label=f"{number:02d}")
        records = await read_topic(kafka_bootstrap, topic_name, until=lambda rs: len(rs) >= 20, timeout=30)
        assert [dict(r.headers)["ce_subject"].decode() for r in records] == [f"{n:02d}" for n in range(20)]
        leaders = [relay for relay in (first, second) if _leads(relay)]
        assert len(leaders) == 1, "exactly one relay publishes"

        await leaders[0].stop()
        follower = second if leaders[0] is first else first
        for number in range(20, 25):
            with transaction(engine) as session:
                _stage(session, topic=topic_name, key="one-key", label=f"{number:02d}")
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
                _stage(session, topic="t", key="k", label=label)
        time.sleep(0.3)
        with Session(engine) as session:
            count, age = outbox_backlog(session)
        assert count == 2 and 0.3 <= age < 30
    finally:
        engine.dispose()


def _set_aside_total(topic: str) -> float:
    return REGISTRY.get_sample_value("caj_outbox_set_aside_total", {"topic": topic}) or 0.0


def _restarts_of_the_relay() -> float:
    return REGISTRY.get_sample_value("caj_worker_restarts_total", {"worker": "outbox-relay"}) or 0.0


def _outbox_rows(engine) -> list[OutboxMessage]:
    with Session(engine) as session:
        return list(session.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars().all())


async def test_a_row_the_broker_keeps_refusing_is_set_aside_and_the_rows_behind_it_are_published(
    kafka_bootstrap, topic_name, database_url
):
    upgrade("catalog_service", database_url)
    engine = make_engine(database_url)
    await create_topic(kafka_bootstrap, topic_name)
    producer = await _started_producer(kafka_bootstrap)
    with transaction(engine) as session:
        _stage(session, topic=topic_name, key="k", label="good-1")
        # Over the producer's 1 MB request limit: refused before it is sent, every time.
        _stage(session, topic=topic_name, key="k", label="too-big", data={"blob": "x" * 2_000_000})
        _stage(session, topic=topic_name, key="k", label="good-3")
    relay = OutboxRelay(engine=engine, producer=producer, poll_interval=30.0, max_attempts=3,
                        backoff=Backoff(first=0.01, cap=0.05))
    relay.start()
    try:
        # Same key, one partition: good-3 comes out only once the big row is set
        # aside, and a resent good-1 would stand before it.
        records = await read_topic(kafka_bootstrap, topic_name, until=lambda rs: b"good-3" in _subjects(rs),
                                   timeout=30)
        assert _subjects(records) == [b"good-1", b"good-3"]
        # The broker acks before the relay marks the row.
        assert await wait_for(lambda: _outbox_rows(engine)[2].published_at is not None, timeout=10)
        good_1, big, good_3 = _outbox_rows(engine)
        assert good_1.published_at is not None and good_1.attempts == 1
        assert good_3.published_at is not None and good_3.attempts == 1
        assert big.published_at is None and big.set_aside_at is not None and big.attempts == 3
        assert "MessageSizeTooLarge" in (big.last_error or "")
        with Session(engine) as session:
            assert outbox_backlog(session) == (0, 0.0), "a set-aside row is no longer pending"
            assert outbox_set_aside_count(session) == 1
        assert _set_aside_total(topic_name) == 1.0
        assert relay.running and relay.worker.restarts == 0
    finally:
        await relay.stop()
        await producer.stop()
        engine.dispose()

    runner = CliRunner()
    environment = {"CATALOG_DATABASE_URL": database_url}
    listed = runner.invoke(caj_app, ["outbox", "failed", "--service", "catalog", "--json"], env=environment)
    assert listed.exit_code == 0, listed.output
    [shown] = json.loads(listed.stdout)
    assert shown["id"] == big.id and shown["service"] == "catalog" and shown["topic"] == topic_name
    assert shown["event_type"] == "org.caj-tracker.test.changed.v1" and shown["attempts"] == 3
    assert "MessageSizeTooLarge" in shown["reason"] and shown["created_at"] and shown["set_aside_at"]
    table = runner.invoke(caj_app, ["outbox", "failed", "--service", "catalog"], env=environment)
    assert table.exit_code == 0 and "MessageSizeTooLarge" in table.stdout
    assert str(big.id) in table.stdout.splitlines()[1]

    retried = runner.invoke(caj_app, ["outbox", "retry", str(big.id), "--service", "catalog"], env=environment)
    assert retried.exit_code == 0, retried.output
    engine = make_engine(database_url)
    try:
        big = _outbox_rows(engine)[1]
        assert big.set_aside_at is None and big.attempts == 0 and big.published_at is None
        with Session(engine) as session:
            assert outbox_backlog(session)[0] == 1 and outbox_set_aside_count(session) == 0
    finally:
        engine.dispose()
    again = runner.invoke(caj_app, ["outbox", "retry", str(big.id), "--service", "catalog"], env=environment)
    assert again.exit_code == 2, "a pending row is not set aside: nothing to put back"


class BrokerDownThenUp:
    """Stands for the relay's producer: every send fails as if the broker
    were unreachable until `up` is set, then the real producer sends."""

    def __init__(self, producer) -> None:
        self.producer = producer
        self.up = False
        self.failed_sends = 0

    async def send(self, topic, **record):
        if not self.up:
            self.failed_sends += 1
            raise KafkaConnectionError("broker unreachable")
        return await self.producer.send(topic, **record)


async def test_the_relay_outlasts_a_broker_outage_of_more_rounds_than_a_growing_delay_can_count(
    kafka_bootstrap, topic_name, database_url
):
    """`0.2 * 2**failures` overflowed after about 1024 failed rounds and killed
    the relay. A tiny capped backoff runs that many rounds in seconds."""
    upgrade("catalog_service", database_url)
    engine = make_engine(database_url)
    await create_topic(kafka_bootstrap, topic_name)
    real_producer = await _started_producer(kafka_bootstrap)
    producer = BrokerDownThenUp(real_producer)
    with transaction(engine) as session:
        _stage(session, topic=topic_name, key="k", label="after-the-outage")
    relay = OutboxRelay(engine=engine, producer=producer, poll_interval=30.0, max_attempts=3,
                        backoff=Backoff(first=0.0005, cap=0.001))
    relay.start()
    try:
        await wait_for(lambda: producer.failed_sends > 1100 or relay.worker.restarts > 0, timeout=120, interval=0.05)
        assert producer.failed_sends > 1100
        assert relay.running and relay.worker.restarts == 0, relay.worker.status

        producer.up = True
        records = await read_topic(kafka_bootstrap, topic_name, until=lambda rs: len(rs) >= 1, timeout=30)
        assert _subjects(records) == [b"after-the-outage"]
        assert await wait_for(lambda: _outbox_rows(engine)[0].published_at is not None, timeout=10)
        [row] = _outbox_rows(engine)
        # An outage is the broker's state, not the row's: never set aside.
        assert row.published_at is not None and row.set_aside_at is None and row.attempts > 1100
    finally:
        await relay.stop()
        await real_producer.stop()
        engine.dispose()


class RelayWhoseLoopFailsOnce(OutboxRelay):
    """An error that escapes the loop itself, not one of its rounds."""

    async def run(self) -> None:
        if not getattr(self, "failed_once", False):
            self.failed_once = True
            raise RuntimeError("the relay loop broke")
        await super().run()


async def test_the_relay_loop_is_restarted_when_it_fails(kafka_bootstrap, topic_name, database_url):
    upgrade("catalog_service", database_url)
    engine = make_engine(database_url)
    await create_topic(kafka_bootstrap, topic_name)
    producer = await _started_producer(kafka_bootstrap)
    with transaction(engine) as session:
        _stage(session, topic=topic_name, key="k", label="after-the-restart")
    restarts_before = _restarts_of_the_relay()
    relay = RelayWhoseLoopFailsOnce(engine=engine, producer=producer, poll_interval=30.0)
    relay.start()
    try:
        records = await read_topic(kafka_bootstrap, topic_name, until=lambda rs: len(rs) >= 1, timeout=30)
        assert _subjects(records) == [b"after-the-restart"]
        assert relay.worker.name == "outbox-relay" and relay.worker.restarts == 1
        assert _restarts_of_the_relay() == restarts_before + 1
        assert relay.running
    finally:
        await relay.stop()
        await producer.stop()
        engine.dispose()
