"""Acceptance 4: a poison message lands on the dead-letter topic with its
reason, and the consumer goes on to the next message."""


import pytest
from aiokafka import TopicPartition
from sqlalchemy import insert, select
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from shared.consumer import IdempotentConsumer, PoisonMessage
from shared.db import make_engine
from shared.events import new_event
from shared.kafka import make_producer
from shared.messaging_models import ProcessedEvent
from shared.migrations import upgrade
from tests.kafka_helpers import (
    create_topic,
    effects,
    fetch_together,
    read_topic,
    send_event,
    started_writer,
    test_metadata,
)
from tests.shared.test_inbox import wait_committed


@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "handle-many"])
async def test_poison_messages_go_to_the_dead_letter_topic_and_the_consumer_carries_on(
    kafka_bootstrap, topic_name, database_url, batched
):
    """A partition's records are applied together, and with a batch handler
    (`handle_many`) handled together; the outcome must be the same as one
    transaction per record."""
    upgrade("requests_service", database_url)
    engine = make_engine(database_url)
    test_metadata.create_all(engine)
    dead_letters = topic_name + ".dlq"
    await create_topic(kafka_bootstrap, topic_name)
    await create_topic(kafka_bootstrap, dead_letters)
    producer = make_producer(kafka_bootstrap, client_id="test")
    await producer.start()
    # Attempts per event: calls of the handler, and batches that reached it.
    attempts: dict[str, int] = {}
    handled_alone: set[str] = set()

    def attempt(session, event):
        data = event.get_data()
        attempts[event.get_id()] = attempts.get(event.get_id(), 0) + 1
        if data.get("refuse"):
            raise PoisonMessage("commitment id does not exist")
        if data.get("crash"):
            raise KeyError("missing field")
        session.execute(insert(effects).values(event_id=event.get_id()))

    def handler(session, event):
        handled_alone.add(event.get_id())
        attempt(session, event)

    batches: list[int] = []

    def handle_many(session, events):
        # Stops at the first bad event, as a real batch does: the consumer
        # must find that event by handling the run one by one.
        batches.append(len(events))
        for event in events:
            attempt(session, event)
        return ["processed"] * len(events)

    if batched:
        handler.handle_many = handle_many

    async with started_writer(engine) as writer:
        consumer = IdempotentConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic_name}", client_id="test",
            topics=[topic_name], handler=handler, producer=producer, dead_letter_topic=dead_letters,
            max_attempts=3, retry_delay=0.01, writer=writer,
        )
        try:
            good_before = new_event(type="t.v1", source="/tests/dlq", data={"n": 1})
            refused = new_event(type="t.v1", source="/tests/dlq", data={"refuse": True})
            crashing = new_event(type="t.v1", source="/tests/dlq", data={"crash": True})
            good_after = new_event(type="t.v1", source="/tests/dlq", data={"n": 2})
            await send_event(producer, topic_name, good_before)
            # Offset 1: not a CloudEvent at all (no headers, broken JSON).
            await producer.send_and_wait(topic_name, value=b"{broken", key=b"k")
            await send_event(producer, topic_name, refused)  # offset 2
            await send_event(producer, topic_name, crashing)  # offset 3
            await send_event(producer, topic_name, good_after)  # offset 4
            fetch_together(consumer.consumer, 5)  # the runs below start from one poll of all five
            await consumer.start()

            await wait_committed(consumer, TopicPartition(topic_name, 0), 5)
            with Session(engine) as session:
                applied = {row[0] for row in session.execute(select(effects.c.event_id)).all()}
            assert applied == {good_before.get_id(), good_after.get_id()}
            # Never retried; in a batch it is handled once more, alone, to find it.
            assert attempts[refused.get_id()] == (2 if batched else 1), "a refused message is not retried"
            assert attempts[crashing.get_id()] == 3, "tried max_attempts times, then dead-lettered"
            if batched:
                # Offset 1 stops the first run before any handling; [good_before]
                # is applied alone; then [refused, crashing, good_after] fails as
                # a batch, refused is found and dead-lettered, [crashing,
                # good_after] fails, crashing is found, and [good_after] succeeds.
                assert batches == [3, 2, 1]
                assert good_after.get_id() not in handled_alone, "the last run went through handle_many"

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

    async with started_writer(engine) as writer:
        consumer = IdempotentConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic_name}", client_id="test",
            topics=[topic_name], handler=handler, producer=producer, dead_letter_topic=dead_letters,
            max_attempts=2, retry_delay=0.01, writer=writer,
        )
        await consumer.start()
        try:
            first = new_event(type="t.v1", source="/tests/dlq", data={"n": 1})
            second = new_event(type="t.v1", source="/tests/dlq", data={"n": 2})
            for event in (first, second):
                await send_event(producer, topic_name, event)
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


@pytest.mark.parametrize("max_attempts", [1, 3])
@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "handle-many"])
async def test_a_record_that_always_fails_is_handled_exactly_max_attempts_times(
    kafka_bootstrap, topic_name, database_url, batched, max_attempts
):
    """A failed batch is an attempt for the record found to have failed it,
    and so is the call that found it: neither may add to `max_attempts`."""
    upgrade("requests_service", database_url)
    engine = make_engine(database_url)
    test_metadata.create_all(engine)
    dead_letters = topic_name + ".dlq"
    await create_topic(kafka_bootstrap, topic_name)
    await create_topic(kafka_bootstrap, dead_letters)
    producer = make_producer(kafka_bootstrap, client_id="test")
    await producer.start()
    calls: dict[str, int] = {}

    def handler(session, event):
        calls[event.get_id()] = calls.get(event.get_id(), 0) + 1
        if event.get_data().get("crash"):
            raise KeyError("missing field")
        session.execute(insert(effects).values(event_id=event.get_id()))

    if batched:
        # Like a real batch handler: the same work as the handler, event by event.
        handler.handle_many = lambda session, events: [handler(session, event) for event in events]

    async with started_writer(engine) as writer:
        consumer = IdempotentConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic_name}", client_id="test",
            topics=[topic_name], handler=handler, producer=producer, dead_letter_topic=dead_letters,
            max_attempts=max_attempts, retry_delay=0.01, writer=writer,
        )
        try:
            before, crashing, after = (new_event(type="t.v1", source="/tests/dlq", data=data)
                                       for data in ({"n": 1}, {"crash": True}, {"n": 2}))
            for event in (before, crashing, after):
                await send_event(producer, topic_name, event)
            fetch_together(consumer.consumer, 3)  # one run: the failure is met inside a batch
            await consumer.start()
            await wait_committed(consumer, TopicPartition(topic_name, 0), 3)

            assert calls[crashing.get_id()] == max_attempts
            letters = await read_topic(kafka_bootstrap, dead_letters, until=lambda rs: len(rs) >= 1, timeout=20)
            assert [dict(r.headers)["ce_id"] for r in letters] == [crashing.get_id().encode()]
            assert dict(letters[0].headers)["dlq.reason"] == b"handler_failed"
            with Session(engine) as session:
                applied = sorted(row[0] for row in session.execute(select(effects.c.event_id)).all())
            assert applied == sorted([before.get_id(), after.get_id()])
        finally:
            await consumer.stop()
            await producer.stop()
    engine.dispose()


async def test_database_outages_are_waited_out_and_use_up_no_attempts(kafka_bootstrap, topic_name, database_url):
    upgrade("requests_service", database_url)
    engine = make_engine(database_url)
    test_metadata.create_all(engine)
    dead_letters = topic_name + ".dlq"
    await create_topic(kafka_bootstrap, topic_name)
    await create_topic(kafka_bootstrap, dead_letters)
    producer = make_producer(kafka_bootstrap, client_id="test")
    await producer.start()
    outcomes: list[str] = []

    def handler(session, event):
        # Three times the database is away; after that the event itself fails.
        if outcomes.count("outage") < 3:
            outcomes.append("outage")
            raise OperationalError("INSERT INTO test_effects", {}, ConnectionError("server closed the connection"))
        outcomes.append("failure")
        raise KeyError("missing field")

    async with started_writer(engine) as writer:
        consumer = IdempotentConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic_name}", client_id="test",
            topics=[topic_name], handler=handler, producer=producer, dead_letter_topic=dead_letters,
            max_attempts=2, retry_delay=0.01, writer=writer,
        )
        await consumer.start()
        try:
            event = new_event(type="t.v1", source="/tests/dlq", data={"n": 1})
            await send_event(producer, topic_name, event)
            await wait_committed(consumer, TopicPartition(topic_name, 0), 1)
            assert outcomes == ["outage"] * 3 + ["failure"] * 2, "every outage waited out, then max_attempts tries"
            letters = await read_topic(kafka_bootstrap, dead_letters, until=lambda rs: len(rs) >= 1, timeout=20)
            assert dict(letters[0].headers)["dlq.reason"] == b"handler_failed"
        finally:
            await consumer.stop()
            await producer.stop()
    engine.dispose()
