"""Acceptance 3: the same event delivered twice has one effect, on the path
production runs (effects through the group-commit writer), also when another
replica commits the same event while this one is applying it."""

import asyncio

from aiokafka import TopicPartition
from prometheus_client import REGISTRY
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import insert, select
from sqlmodel import Session

from shared.consumer import IdempotentConsumer
from shared.db import make_engine
from shared.events import new_event
from shared.kafka import make_producer
from shared.messaging_models import ProcessedEvent
from shared.migrations import upgrade
from tests.kafka_helpers import create_topic, effects, fetch_together, send_event, started_writer, test_metadata


async def wait_committed(
    consumer: IdempotentConsumer, partition: TopicPartition, offset: int, timeout: float = 60
):
    for _ in range(int(timeout / 0.2)):
        if await consumer.consumer.committed(partition) == offset:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"consumer never committed offset {offset} on {partition}")


def consumed(topic: str, group: str, outcome: str) -> float:
    labels = {"topic": topic, "group": group, "outcome": outcome}
    return REGISTRY.get_sample_value("caj_kafka_messages_consumed_total", labels) or 0.0


async def test_same_event_delivered_twice_has_one_effect(kafka_bootstrap, topic_name, database_url):
    upgrade("requests_service", database_url)
    engine = make_engine(database_url)
    test_metadata.create_all(engine)
    await create_topic(kafka_bootstrap, topic_name)
    await create_topic(kafka_bootstrap, topic_name + ".dlq")
    producer = make_producer(kafka_bootstrap, client_id="test")
    await producer.start()

    def apply_effect(session, event):
        session.execute(insert(effects).values(event_id=event.get_id()))

    async with started_writer(engine) as writer:
        consumer = IdempotentConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic_name}", client_id="test",
            topics=[topic_name], handler=apply_effect, producer=producer, dead_letter_topic=topic_name + ".dlq",
            writer=writer,
        )
        await consumer.start()
        try:
            interest = "org.caj-tracker.test.interest.v1"
            event = new_event(type=interest, source="/tests/inbox", data={"country": "KG"})
            other = new_event(type=interest, source="/tests/inbox", data={"country": "UZ"})
            for sent in (event, event, other, event):
                await send_event(producer, topic_name, sent, key="caj-2006-3-00-06")

            await wait_committed(consumer, TopicPartition(topic_name, 0), 4)
            with Session(engine) as session:
                applied = sorted(row[0] for row in session.execute(select(effects.c.event_id)).all())
                assert applied == sorted([event.get_id(), other.get_id()])
                processed = [row[0] for row in session.execute(select(ProcessedEvent.event_id)).all()]
                assert sorted(processed) == sorted([event.get_id(), other.get_id()])
        finally:
            await consumer.stop()
            await producer.stop()
    engine.dispose()


async def test_redelivery_after_restart_without_offset_commit_has_no_second_effect(
    kafka_bootstrap, topic_name, database_url
):
    """Effects committed, offsets not (the process died in between): a new
    consumer reads the record again and the inbox skips it."""
    upgrade("requests_service", database_url)
    engine = make_engine(database_url)
    test_metadata.create_all(engine)
    await create_topic(kafka_bootstrap, topic_name)
    await create_topic(kafka_bootstrap, topic_name + ".dlq")
    producer = make_producer(kafka_bootstrap, client_id="test")
    await producer.start()
    calls = []

    def apply_effect(session, event):
        calls.append(event.get_id())
        session.execute(insert(effects).values(event_id=event.get_id()))

    event = new_event(type="org.caj-tracker.test.interest.v1", source="/tests/inbox", data={"country": "TJ"})
    await send_event(producer, topic_name, event)

    async with started_writer(engine) as writer:
        def new_consumer():
            return IdempotentConsumer(
                bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic_name}", client_id="test",
                topics=[topic_name], handler=apply_effect, producer=producer,
                dead_letter_topic=topic_name + ".dlq", writer=writer,
            )

        first = new_consumer()

        async def skip_commit(partitions=None):  # the crash: effects in, offsets never committed
            return None

        first._commit_uncommitted = skip_commit
        await first.start()
        try:
            for _ in range(300):
                if calls:
                    break
                await asyncio.sleep(0.2)
            assert calls == [event.get_id()]
        finally:
            await first.stop()

        second = new_consumer()
        await second.start()
        try:
            await wait_committed(second, TopicPartition(topic_name, 0), 1)
            with Session(engine) as session:
                assert session.execute(select(effects.c.event_id)).all() == [(event.get_id(),)]
            assert calls == [event.get_id()], "the handler must not run again for a processed event"
        finally:
            await second.stop()
            await producer.stop()
    engine.dispose()


async def test_an_event_another_replica_commits_meanwhile_has_one_effect_and_counts_as_duplicate(
    kafka_bootstrap, topic_name, postgres_database_url
):
    """During a rebalance two replicas can apply the same event at once. The
    one whose inbox row comes second must undo its effects and count the event
    as a duplicate: in a run (the batched inbox INSERT clashes) and alone (the
    single inbox row clashes). PostgreSQL only: SQLite's writers take turns
    (BEGIN IMMEDIATE), so no other replica can commit in between there."""
    url = postgres_database_url
    upgrade("requests_service", url)
    engine = make_engine(url)
    other_replica = make_engine(url)
    test_metadata.create_all(engine)
    await create_topic(kafka_bootstrap, topic_name)
    await create_topic(kafka_bootstrap, topic_name + ".dlq")
    producer = make_producer(kafka_bootstrap, client_id="test")
    await producer.start()
    group = f"g-{topic_name}"
    first, second, third = (new_event(type="t.v1", source="/tests/inbox", data={"n": n}) for n in range(3))
    handled: list[str] = []

    def apply_effect(session, event):
        handled.append(event.get_id())
        session.execute(insert(effects).values(event_id=event.get_id()))

    def commit_on_other_replica(event) -> None:
        with other_replica.begin() as connection:
            connection.execute(insert(effects).values(event_id=event.get_id()))
            connection.execute(insert(ProcessedEvent.__table__).values(
                consumer_group=group, event_source=event.get_source(), event_id=event.get_id(),
                topic=topic_name, partition=0, offset=0,
            ))

    # The other replica commits `first` just before this consumer's run writes
    # its inbox rows, then `second` just before `second`'s own inbox row (it is
    # applied alone after the run clashed).
    overtaken = [first, second]

    @sqlalchemy_event.listens_for(engine, "before_cursor_execute")
    def other_replica_gets_there_first(connection, cursor, statement, parameters, context, executemany):
        if overtaken and statement.lstrip().upper().startswith("INSERT INTO PROCESSED_EVENTS"):
            commit_on_other_replica(overtaken.pop(0))

    async with started_writer(engine) as writer:
        consumer = IdempotentConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=group, client_id="test",
            topics=[topic_name], handler=apply_effect, producer=producer, dead_letter_topic=topic_name + ".dlq",
            # A clash mistaken for a handler error would be dead-lettered at once.
            writer=writer, max_attempts=1, retry_delay=0.01,
        )
        try:
            for sent in (first, second, third):
                await send_event(producer, topic_name, sent)
            fetch_together(consumer.consumer, 3)  # one run, so the run's INSERT is the first to clash
            await consumer.start()
            await wait_committed(consumer, TopicPartition(topic_name, 0), 3)

            assert overtaken == [], "both clashes happened"
            with Session(engine) as session:
                applied = sorted(row[0] for row in session.execute(select(effects.c.event_id)).all())
            assert applied == sorted(event.get_id() for event in (first, second, third)), "each effect once"
            assert consumed(topic_name, group, "duplicate") == 2
            assert consumed(topic_name, group, "processed") == 1
            assert consumed(topic_name, group, "dead_lettered") == 0
            # The run handled all three and was undone; then `first` was found
            # in the inbox, `second` handled again and undone, `third` applied.
            assert handled == [first.get_id(), second.get_id(), third.get_id(), second.get_id(), third.get_id()]
        finally:
            await consumer.stop()
            await producer.stop()
    engine.dispose()
    other_replica.dispose()
