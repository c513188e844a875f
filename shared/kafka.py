"""Kafka clients configured the way this system needs them."""

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


def make_producer(bootstrap_servers: str, *, client_id: str) -> AIOKafkaProducer:
    # aiokafka defaults to acks=1 without idempotence: a leader failover could
    # drop or duplicate records. We want neither.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        request_timeout_ms=15000,
    )


def make_consumer(bootstrap_servers: str, *, group_id: str, client_id: str) -> AIOKafkaConsumer:
    # Offsets are committed by hand, only after the effects are in the database.
    # The caller subscribes, so that it can pass its rebalance listener.
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=500,
    )


async def read_whole_topics(bootstrap_servers: str, topics: Iterable[str], *, client_id: str,
                            from_end: bool = False) -> AIOKafkaConsumer:
    """A started consumer without a group (nothing committed, no rebalance)
    assigned every partition of `topics`, positioned at their start, or at
    their end (`from_end`: only what is published after this returns).

    The partitions are asked of the broker, not taken from the consumer's own
    metadata, which may not know a topic yet. A topic that does not exist is
    an error; on any error the consumer is stopped before it is raised."""
    partitions = await _all_partitions(bootstrap_servers, tuple(topics), client_id=client_id)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False,
                                client_id=client_id)
    await consumer.start()
    try:
        consumer.assign(partitions)
        if from_end:
            await consumer.seek_to_end(*partitions)
            # Resolve the end positions now, or they would be taken at the first fetch.
            for partition in partitions:
                await consumer.position(partition)
        else:
            await consumer.seek_to_beginning(*partitions)
    except BaseException:
        await consumer.stop()
        raise
    return consumer


async def _all_partitions(bootstrap_servers: str, topics: tuple[str, ...], *, client_id: str,
                          wait_seconds: float = 10.0) -> list[TopicPartition]:
    """Every partition of `topics`. A topic created a moment ago may not be
    described yet (its metadata is still on its way to the broker asked):
    that is waited out for `wait_seconds`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id=f"{client_id}-admin")
    await admin.start()
    try:
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while True:
            described = await admin.describe_topics(list(topics))
            partitions = [TopicPartition(topic["topic"], partition["partition"])
                          for topic in described for partition in topic["partitions"]]
            missing = set(topics) - {partition.topic for partition in partitions}
            if not missing:
                return sorted(partitions)
            if asyncio.get_running_loop().time() >= deadline:
                raise RuntimeError(f"no partitions yet for {sorted(missing)}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
