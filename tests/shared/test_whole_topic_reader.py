"""Readers without a consumer group (the key store, the console's live feed)
get every partition of their topics from the broker, not from the consumer's
metadata, which may not know a topic yet."""

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaProducer

from shared.contracts.identity import API_KEY_CHANGED, IDENTITY_SOURCE, ApiKeyRecord
from shared.events import new_event
from shared.identity import KeyStore, new_api_key
from shared.kafka import read_whole_topics
from tests.kafka_helpers import create_topic, send_event, wait_for

PARTITIONS = 3


def key_event(role: str = "coordinator") -> tuple[str, object]:
    key_id, full_key, secret_hash = new_api_key()
    record = ApiKeyRecord(key_id=key_id, role=role, secret_sha256=secret_hash, created_at=datetime.now(UTC))
    return full_key, new_event(type=API_KEY_CHANGED, source=IDENTITY_SOURCE, subject=key_id,
                               data=record.model_dump(mode="json"))


async def test_the_key_store_reads_keys_from_every_partition_of_its_topic(kafka_bootstrap):
    topic = f"identity-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka_bootstrap, topic, partitions=PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    store = KeyStore(kafka_bootstrap, topic=topic)
    try:
        keys = []
        for partition in range(PARTITIONS):
            full_key, event = key_event()
            await send_event(producer, topic, event, key=f"key-{partition}", partition=partition)
            keys.append(full_key)
        await store.start()
        assert await wait_for(lambda: store.caught_up, timeout=30)
        # Caught up means every partition's end, not just partition 0's.
        assert all(store.authenticate(full_key) is not None for full_key in keys)

        later_key, event = key_event()
        await send_event(producer, topic, event, key="later", partition=PARTITIONS - 1)
        assert await wait_for(lambda: store.authenticate(later_key) is not None, timeout=30)
    finally:
        await store.stop()
        await producer.stop()


async def test_a_reader_from_the_end_gets_only_what_is_published_after_it_started(kafka_bootstrap):
    topic = f"whole-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka_bootstrap, topic, partitions=PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for partition in range(PARTITIONS):
            await producer.send_and_wait(topic, value=b"before", partition=partition)
        reader = await read_whole_topics(kafka_bootstrap, [topic], client_id="test-reader", from_end=True)
        try:
            assert {tp.partition for tp in reader.assignment()} == set(range(PARTITIONS))
            for partition in range(PARTITIONS):
                await producer.send_and_wait(topic, value=b"after", partition=partition)
            values: list[bytes] = []
            for _ in range(50):
                for records in (await reader.getmany(timeout_ms=200)).values():
                    values.extend(record.value for record in records)
                if len(values) >= PARTITIONS:
                    break
            assert values == [b"after"] * PARTITIONS
        finally:
            await reader.stop()
    finally:
        await producer.stop()


async def test_a_topic_that_does_not_exist_is_an_error(kafka_bootstrap):
    with pytest.raises(RuntimeError, match="no partitions yet"):
        await read_whole_topics(kafka_bootstrap, [f"missing-{uuid.uuid4().hex[:8]}"], client_id="test-reader")


async def test_a_topic_not_yet_described_is_waited_for(kafka_bootstrap):
    """What `caj keys create` meets on a new broker: the topic was just
    created, and the broker asked does not describe it yet."""
    topic = f"fresh-{uuid.uuid4().hex[:8]}"
    reading = asyncio.create_task(read_whole_topics(kafka_bootstrap, [topic], client_id="test-reader"))
    await asyncio.sleep(0.5)
    assert not reading.done()
    await create_topic(kafka_bootstrap, topic, partitions=PARTITIONS)
    reader = await asyncio.wait_for(reading, timeout=15)
    try:
        assert {tp.partition for tp in reader.assignment()} == set(range(PARTITIONS))
    finally:
        await reader.stop()
