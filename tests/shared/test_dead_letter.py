"""Acceptance 4: a poison message lands on the dead-letter topic with its
reason, and the consumer goes on to the next message."""


import pytest
from aiokafka import TopicPartition
from sqlalchemy import insert, select
from sqlmodel import Session

from shared.consumer import IdempotentConsumer, PoisonMessage
from shared.db import make_engine
from shared.group_commit import GroupCommitWriter
from shared.events import new_event, to_kafka
from shared.kafka import make_producer
from shared.messaging_models import ProcessedEvent
from shared.migrations import upgrade
from tests.kafka_helpers import create_topic, effects, read_topic, test_metadata
from tests.shared.test_inbox import wait_committed


@pytest.mark.parametrize("mode", ["own-transactions", "group-commit", "group-commit-batched"])
async def test_poison_messages_go_to_the_dead_letter_topic_and_the_consumer_carries_on(
    kafka_bootstrap, topic_name, database_url, mode
):
    """With a group-commit writer a partition's records are applied together,
    and with a batch handler (`handle_many`) handled together; the outcome
    must be the same as one transaction per record."""
    upgrade("requests_service", database_url)
    engine = make_engine(database_url)
    writer = GroupCommitWriter(engine) if mode != "own-transactions" else None
    if writer is not None:
        writer.start()
    test_metadata.create_all(engine)
    dead_letters = topic_name + ".dlq"
    await create_topic(kafka_bootstrap, topic_name)
    await create_topic(kafka_bootstrap, dead_letters)
    producer = make_producer(kafka_bootstrap, client_id="test")
    await producer.start()
    attempts: dict[str, int] = {}

    def handler(session, event):
        data = event.get_data()
        attempts[event.get_id()] = attempts.get(event.get_id(), 0) + 1
        if data.get("refuse"):
            raise PoisonMessage("commitment id does not exist")
        if data.get("crash"):
            raise KeyError("missing field")
        session.execute(insert(effects).values(event_id=event.get_id()))

    batches: list[int] = []

    def handle_many(session, events):
        # Fails the whole batch on a bad event, without counting an attempt:
        # the consumer must find that event by handling the run one by one.
        batches.append(len(events))
        if any(event.get_data().get("refuse") or event.get_data().get("crash") for event in events):
            raise RuntimeError("a bad event in the batch")
        session.execute(insert(effects), [{"event_id": event.get_id()} for event in events])
        return ["processed"] * len(events)

    if mode == "group-commit-batched":
        handler.handle_many = handle_many

    consumer = IdempotentConsumer(
        engine=engine, bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic_name}", client_id="test",
        topics=[topic_name], handler=handler, producer=producer, dead_letter_topic=dead_letters,
        max_attempts=3, retry_delay=0.01, writer=writer,
    )
    try:
        async def send(event):
            record = to_kafka(event, key="k")
            await producer.send_and_wait(topic_name, value=record.value, key=record.key, headers=record.headers)

        good_before = new_event(type="t.v1", source="/tests/dlq", data={"n": 1})
        refused = new_event(type="t.v1", source="/tests/dlq", data={"refuse": True})
        crashing = new_event(type="t.v1", source="/tests/dlq", data={"crash": True})
        good_after = new_event(type="t.v1", source="/tests/dlq", data={"n": 2})
        await send(good_before)
        # Offset 1: not a CloudEvent at all (no headers, broken JSON).
        await producer.send_and_wait(topic_name, value=b"{broken", key=b"k")
        await send(refused)  # offset 2
        await send(crashing)  # offset 3
        await send(good_after)  # offset 4
        await consumer.start()  # all five arrive in one batch

        await wait_committed(consumer, TopicPartition(topic_name, 0), 5)
        with Session(engine) as session:
            applied = {row[0] for row in session.execute(select(effects.c.event_id)).all()}
        assert applied == {good_before.get_id(), good_after.get_id()}
        assert attempts[refused.get_id()] == 1, "a refused message is not retried"
        assert attempts[crashing.get_id()] == 3, "a failing handler is retried, then dead-lettered"
        if mode == "group-commit-batched":
            # Offset 1 stops the first run before any handling; [good_before]
            # is applied alone; then [refused, crashing, good_after] fails as
            # a batch, refused is found and dead-lettered, [crashing,
            # good_after] fails, crashing is found, and [good_after] succeeds.
            assert batches == [3, 2, 1]
            assert good_after.get_id() not in attempts, "the last run went through handle_many"

        letters = await read_topic(kafka_bootstrap, dead_letters, until=lambda rs: len(rs) >= 3, timeout=20)
        assert len(letters) == 3
        by_offset = {int(dict(r.headers)["dlq.original.offset"]): dict(r.headers) for r in letters}
        assert set(by_offset) == {1, 2, 3}
        assert by_offset[1]["dlq.reason"] == b"invalid_event"
        assert b"missing header ce_id" in by_offset[1]["dlq.detail"]
        assert by_offset[2]["dlq.reason"] == b"rejected_by_handler"
        assert by_offset[2]["dlq.detail"] == b"commitment id does not exist"
        assert by_offset[3]["dlq.reason"] == b"handler_failed"
        assert b"KeyError" in by_offset[3]["dlq.detail"]
        for headers in by_offset.values():
            assert headers["dlq.original.topic"] == topic_name.encode()
            assert headers["dlq.original.partition"] == b"0"
            assert headers["dlq.consumer.group"] == f"g-{topic_name}".encode()
        # The original record travels unchanged, so it can be replayed.
        original = {int(dict(r.headers)["dlq.original.offset"]): r for r in letters}
        assert original[1].value == b"{broken"
        assert dict(original[2].headers)["ce_id"] == refused.get_id().encode()
    finally:
        await consumer.stop()
        await producer.stop()
        if writer is not None:
            await writer.stop()
        engine.dispose()


async def test_a_handler_breaking_a_constraint_is_dead_lettered_not_taken_for_a_duplicate(
    kafka_bootstrap, topic_name, database_url
):
    upgrade("requests_service", database_url)
    engine = make_engine(database_url)
    test_metadata.create_all(engine)
    dead_letters = topic_name + ".dlq"
    await create_topic(kafka_bootstrap, topic_name)
    await create_topic(kafka_bootstrap, dead_letters)
    producer = make_producer(kafka_bootstrap, client_id="test")
    await producer.start()

    def handler(session, event):
        # Every event writes row id 1: the second one breaks the primary key.
        session.execute(insert(effects).values(id=1, event_id=event.get_id()))

    consumer = IdempotentConsumer(
        engine=engine, bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic_name}", client_id="test",
        topics=[topic_name], handler=handler, producer=producer, dead_letter_topic=dead_letters,
        max_attempts=2, retry_delay=0.01,
    )
    await consumer.start()
    try:
        first = new_event(type="t.v1", source="/tests/dlq", data={"n": 1})
        second = new_event(type="t.v1", source="/tests/dlq", data={"n": 2})
        for event in (first, second):
            record = to_kafka(event, key="k")
            await producer.send_and_wait(topic_name, value=record.value, key=record.key, headers=record.headers)
        await wait_committed(consumer, TopicPartition(topic_name, 0), 2)
        letters = await read_topic(kafka_bootstrap, dead_letters, until=lambda rs: len(rs) >= 1, timeout=20)
        assert [dict(r.headers)["ce_id"] for r in letters] == [second.get_id().encode()]
        assert dict(letters[0].headers)["dlq.reason"] == b"handler_failed"
        with Session(engine) as session:
            processed = [row[0] for row in session.execute(select(ProcessedEvent.event_id)).all()]
        assert processed == [first.get_id()], "a failed event is not recorded as processed"
    finally:
        await consumer.stop()
        await producer.stop()
        engine.dispose()
