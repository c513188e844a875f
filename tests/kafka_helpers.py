"""Small tools the tests use to look at the real broker directly."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from cloudevents.core.v1.event import CloudEvent
from sqlalchemy import Column, Integer, MetaData, String, Table
from sqlalchemy.engine import Engine

from shared.events import to_kafka
from shared.group_commit import GroupCommitWriter
from shared.topics import TopicSpec, ensure_topics

# A table of effects only tests have: one row per handled event.
test_metadata = MetaData()
effects = Table(
    "test_effects",
    test_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(100), nullable=False),
    Column("payload", String(2000), nullable=True),
)


async def create_topic(bootstrap: str, name: str, partitions: int = 1) -> TopicSpec:
    spec = TopicSpec(name, partitions=partitions)
    await ensure_topics(bootstrap, [spec])
    return spec


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[ConsumerRecord]], bool],
    timeout: float = 30.0,
) -> list[ConsumerRecord]:
    """Read a topic from the beginning until `until(records)` holds or time runs out."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        partitions = await _partitions(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout
        while not until(records) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def records_on(bootstrap: str, topic: str) -> int:
    """How many records the topic holds now, over all its partitions."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        beginnings, ends = await consumer.beginning_offsets(partitions), await consumer.end_offsets(partitions)
        return sum(ends[partition] - beginnings[partition] for partition in partitions)
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    for _ in range(50):
        ids = consumer.partitions_for_topic(topic)
        if ids:
            return [TopicPartition(topic, i) for i in sorted(ids)]
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise AssertionError(f"topic {topic} has no partitions")


async def produce_raw(
    bootstrap: str, topic: str, *, value: bytes | None, key: bytes | None = None, headers: list | None = None
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=value, key=key, headers=headers or [])
    finally:
        await producer.stop()


async def wait_for(condition: Callable[[], bool], *, timeout: float = 30.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(interval)
    return condition()


async def send_event(
    producer: AIOKafkaProducer, topic: str, event: CloudEvent, *, key: str = "k", partition: int | None = None
) -> None:
    record = to_kafka(event, key=key)
    await producer.send_and_wait(topic, value=record.value, key=record.key, headers=record.headers,
                                 partition=partition)


@contextlib.asynccontextmanager
async def started_writer(engine: Engine) -> AsyncIterator[GroupCommitWriter]:
    """A running group-commit writer, as every consumer needs."""
    writer = GroupCommitWriter(engine)
    writer.start()
    try:
        yield writer
    finally:
        await writer.stop()


def fetch_together(consumer: AIOKafkaConsumer, count: int, *, timeout: float = 30.0) -> None:
    """Make `consumer`'s first poll hand over `count` records at once, however
    many fetches the broker takes to deliver them (or what came by `timeout`):
    for tests of how the records of one poll are applied."""
    own_getmany = consumer.getmany

    async def getmany(*partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None):
        gathered: dict[TopicPartition, list[ConsumerRecord]] = {}
        deadline = time.monotonic() + timeout
        while sum(map(len, gathered.values())) < count and time.monotonic() < deadline:
            fetched = await own_getmany(*partitions, timeout_ms=200, max_records=max_records)
            for partition, records in fetched.items():
                gathered.setdefault(partition, []).extend(records)
        consumer.getmany = own_getmany  # later polls are the consumer's own
        return gathered

    consumer.getmany = getmany
