"""Kafka clients configured the way this system needs them."""

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


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
