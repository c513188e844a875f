"""Acceptance 3: the same event delivered twice has one effect."""

import asyncio

from aiokafka import TopicPartition
from sqlalchemy import insert, select
from sqlmodel import Session

from shared.consumer import IdempotentConsumer
from shared.db import make_engine
from shared.events import new_event, to_kafka
from shared.kafka import make_producer
from shared.messaging_models import ProcessedEvent
from shared.migrations import upgrade
from tests.kafka_helpers import create_topic, effects, test_metadata


async def wait_committed(consumer: IdempotentConsumer, partition: TopicPartition, offset: int, timeout: float = 60):
    for _ in range(int(timeout / 0.2)):
        if await consumer.consumer.committed(partition) == offset:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"consumer never committed offset {offset} on {partition}")


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

    consumer = IdempotentConsumer(
        engine=engine, bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic_name}", client_id="test",
        topics=[topic_name], handler=apply_effect, producer=producer, dead_letter_topic=topic_name + ".dlq",
    )
    await consumer.start()
    try:
        event = new_event(type="org.caj-tracker.test.interest.v1", source="/tests/inbox", data={"country": "KG"})
        other = new_event(type="org.caj-tracker.test.interest.v1", source="/tests/inbox", data={"country": "UZ"})
        for sent in (event, event, other, event):
            record = to_kafka(sent, key="caj-2006-3-00-06")
            await producer.send_and_wait(topic_name, value=record.value, key=record.key, headers=record.headers)

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

    def new_consumer():
        return IdempotentConsumer(
            engine=engine, bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic_name}", client_id="test",
            topics=[topic_name], handler=apply_effect, producer=producer, dead_letter_topic=topic_name + ".dlq",
        )

    event = new_event(type="org.caj-tracker.test.interest.v1", source="/tests/inbox", data={"country": "TJ"})
    record = to_kafka(event, key="k")
    await producer.send_and_wait(topic_name, value=record.value, key=record.key, headers=record.headers)

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
