"""Acceptance 1: a CloudEvent sent through the shared producer arrives through
the shared consumer on the real broker with all attributes intact."""

import threading
from datetime import UTC, datetime

from shared.consumer import IdempotentConsumer
from shared.db import make_engine
from shared.events import new_event, to_kafka
from shared.kafka import make_producer
from shared.migrations import upgrade
from tests.kafka_helpers import create_topic, started_writer, wait_for


async def test_cloudevent_round_trip_through_shared_producer_and_consumer(kafka_bootstrap, topic_name, database_url):
    upgrade("requests_service", database_url)
    engine = make_engine(database_url)
    await create_topic(kafka_bootstrap, topic_name, partitions=3)
    await create_topic(kafka_bootstrap, topic_name + ".dlq")
    received = []
    lock = threading.Lock()

    def remember(session, event):
        with lock:
            received.append(event)

    producer = make_producer(kafka_bootstrap, client_id="test-producer")
    await producer.start()
    try:
        async with started_writer(engine) as writer:
            consumer = IdempotentConsumer(
                writer=writer, bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic_name}", client_id="test",
                topics=[topic_name], handler=remember, producer=producer, dead_letter_topic=topic_name + ".dlq",
            )
            await consumer.start()
            try:
                sent = new_event(
                    type="org.caj-tracker.test.sent.v1", source="/tests/roundtrip", subject="caj-2006-3-00-06",
                    data={"required_countries": ["KZ", "KG", "TJ", "UZ"], "amount": 420000},
                    time=datetime(2006, 6, 5, tzinfo=UTC),
                )
                record = to_kafka(sent, key="caj-2006-3-00-06")
                await producer.send_and_wait(topic_name, value=record.value, key=record.key, headers=record.headers)

                assert await wait_for(lambda: len(received) == 1, timeout=60)
                got = received[0]
                expected = dict(sent.get_attributes(), partitionkey="caj-2006-3-00-06")
                assert got.get_attributes() == expected
                assert got.get_data() == sent.get_data()
            finally:
                await consumer.stop()
    finally:
        await producer.stop()
        engine.dispose()
