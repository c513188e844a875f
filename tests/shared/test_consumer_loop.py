"""The consumer's loop: supervised (a failure restarts it without losing the
records it had fetched), and its handlers' log lines carry the event ids."""

import asyncio
import logging
import threading

from aiokafka import TopicPartition
from prometheus_client import REGISTRY
from sqlalchemy import insert, select
from sqlmodel import Session

from shared.consumer import IdempotentConsumer
from shared.db import make_engine
from shared.events import new_event
from shared.kafka import make_producer
from shared.logging import event_id_var
from shared.migrations import upgrade
from tests.kafka_helpers import (
    create_topic,
    effects,
    fetch_together,
    send_event,
    started_writer,
    test_metadata,
    wait_for,
)
from tests.shared.test_inbox import wait_committed


def restarts_of(worker: str) -> float:
    return REGISTRY.get_sample_value("caj_worker_restarts_total", {"worker": worker}) or 0.0


async def test_a_failed_loop_is_restarted_and_applies_the_rest_of_its_fetch_once(
    kafka_bootstrap, topic_name, database_url
):
    upgrade("requests_service", database_url)
    engine = make_engine(database_url)
    test_metadata.create_all(engine)
    await create_topic(kafka_bootstrap, topic_name)
    await create_topic(kafka_bootstrap, topic_name + ".dlq")
    producer = make_producer(kafka_bootstrap, client_id="test")
    await producer.start()
    group = f"g-{topic_name}"
    handled: list[str] = []

    def apply_effect(session, event):
        handled.append(event.get_id())
        session.execute(insert(effects).values(event_id=event.get_id()))

    async with started_writer(engine) as writer:
        consumer = IdempotentConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=group, client_id="test", topics=[topic_name],
            handler=apply_effect, producer=producer, dead_letter_topic=topic_name + ".dlq",
            writer=writer, retry_delay=0.01,
        )
        assert consumer.worker.name == f"consumer:{group}"
        restarts_before = restarts_of(consumer.worker.name)
        apply_records = consumer._consume_together
        broke = []

        async def break_after_the_first_record(partition, records):
            if not broke:  # once: the first record applied, the rest of the fetch not
                broke.append(True)
                await apply_records(partition, records[:1])
                raise RuntimeError("the loop broke")
            await apply_records(partition, records)

        consumer._consume_together = break_after_the_first_record
        try:
            events = [new_event(type="t.v1", source="/tests/loop", data={"n": n}) for n in range(3)]
            for event in events:
                await send_event(producer, topic_name, event)
            fetch_together(consumer.consumer, 3)  # the break comes in the middle of one fetch
            assert not consumer.running
            await consumer.start()

            # The fetch position was past all three: the restarted loop reads
            # them again from the first one not applied.
            await wait_committed(consumer, TopicPartition(topic_name, 0), 3, timeout=30)
            assert consumer.worker.restarts == 1
            assert restarts_of(consumer.worker.name) == restarts_before + 1
            assert "the loop broke" in consumer.worker.last_error
            assert await wait_for(lambda: consumer.running, timeout=5)
            assert handled == [event.get_id() for event in events], "each applied once, in order"
            with Session(engine) as session:
                applied = [row[0] for row in session.execute(select(effects.c.event_id)).all()]
            assert sorted(applied) == sorted(event.get_id() for event in events)
        finally:
            await consumer.stop()
            await producer.stop()
        assert not consumer.running
    engine.dispose()


async def test_records_are_read_ahead_while_a_run_commits_and_a_break_reads_them_again(
    kafka_bootstrap, topic_name, database_url
):
    """While one run is in the writer, the records produced meanwhile are
    fetched (not left at the broker until the next poll). If the loop then
    breaks, the records read ahead are read again: none skipped, none twice."""
    upgrade("requests_service", database_url)
    engine = make_engine(database_url)
    test_metadata.create_all(engine)
    await create_topic(kafka_bootstrap, topic_name, partitions=2)
    await create_topic(kafka_bootstrap, topic_name + ".dlq")
    producer = make_producer(kafka_bootstrap, client_id="test")
    await producer.start()
    handled: list[str] = []
    first_in_writer, release_first = threading.Event(), threading.Event()

    def apply_effect(session, event):
        if not handled:  # the first run holds the writer until the test lets it go
            first_in_writer.set()
            assert release_first.wait(timeout=30)
        handled.append(event.get_id())
        session.execute(insert(effects).values(event_id=event.get_id()))

    async with started_writer(engine) as writer:
        consumer = IdempotentConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic_name}", client_id="test", topics=[topic_name],
            handler=apply_effect, producer=producer, dead_letter_topic=topic_name + ".dlq",
            writer=writer, retry_delay=0.01,
        )
        apply_records = consumer._consume_together
        calls: list[int] = []

        async def break_in_the_read_ahead_run(partition, records):
            calls.append(len(records))
            if len(calls) == 2:  # the records read ahead: one applied, then the loop breaks,
                await apply_records(partition, records[:1])
                # with a record of another partition read ahead of this run.
                await send_event(producer, topic_name, events[4], partition=1)
                assert await wait_for(lambda: consumer._fetched_count == 1, timeout=10)
                raise RuntimeError("the loop broke")
            await apply_records(partition, records)

        consumer._consume_together = break_in_the_read_ahead_run
        events = [new_event(type="t.v1", source="/tests/loop", data={"n": n}) for n in range(5)]
        try:
            await consumer.start()
            await send_event(producer, topic_name, events[0], partition=0)
            assert await asyncio.to_thread(first_in_writer.wait, 30)
            for event in events[1:4]:
                await send_event(producer, topic_name, event, partition=0)
            # The first run has not committed, and the other three are fetched already.
            assert await wait_for(lambda: consumer._fetched_count == 3, timeout=10), consumer._fetched_count
            assert handled == []
            release_first.set()

            await wait_committed(consumer, TopicPartition(topic_name, 0), 4, timeout=30)
            await wait_committed(consumer, TopicPartition(topic_name, 1), 1, timeout=30)
            assert calls[:2] == [1, 3] and consumer.worker.restarts == 1
            # Each once; in order within partition 0 (partition 1 has its own order).
            assert [id for id in handled if id != events[4].get_id()] == [event.get_id() for event in events[:4]]
            assert handled.count(events[4].get_id()) == 1
        finally:
            release_first.set()
            await consumer.stop()
            await producer.stop()
    engine.dispose()


class _StampEventId(logging.Filter):
    """What the service's log formatter adds to every line: the event id in context."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.event_id = event_id_var.get()
        return True


async def test_log_lines_of_handlers_carry_the_event_ids_alone_and_in_batches(
    kafka_bootstrap, topic_name, database_url, caplog
):
    """Handlers run on the writer's thread, outside the consumer's log
    context. One event: its id. A batch: its events' ids, comma-joined."""
    upgrade("requests_service", database_url)
    engine = make_engine(database_url)
    test_metadata.create_all(engine)
    await create_topic(kafka_bootstrap, topic_name)
    await create_topic(kafka_bootstrap, topic_name + ".dlq")
    producer = make_producer(kafka_bootstrap, client_id="test")
    await producer.start()
    handler_log = logging.getLogger("tests.handler")
    caplog.set_level(logging.INFO, logger="tests.handler")
    caplog.handler.addFilter(_StampEventId())
    first, second, flaky = (new_event(type="t.v1", source="/tests/loop", data={"n": n}) for n in range(3))
    failed_once: list[str] = []

    def handler(session, event):
        handler_log.info("handling %s", event.get_id())
        if event.get_id() == flaky.get_id() and not failed_once:
            failed_once.append(event.get_id())  # once: its retry is applied alone
            raise RuntimeError("not this time")
        session.execute(insert(effects).values(event_id=event.get_id()))

    def handle_many(session, events):
        handler_log.info("handling a batch of %s", ",".join(event.get_id() for event in events))
        if any(event.get_id() == flaky.get_id() for event in events):
            raise RuntimeError("a batch with the flaky event")
        session.execute(insert(effects), [{"event_id": event.get_id()} for event in events])
        return ["processed"] * len(events)

    handler.handle_many = handle_many

    async with started_writer(engine) as writer:
        consumer = IdempotentConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=f"g-{topic_name}", client_id="test", topics=[topic_name],
            handler=handler, producer=producer, dead_letter_topic=topic_name + ".dlq",
            writer=writer, retry_delay=0.01,
        )
        try:
            for event in (first, second, flaky):
                await send_event(producer, topic_name, event)
            fetch_together(consumer.consumer, 3)
            await consumer.start()
            await wait_committed(consumer, TopicPartition(topic_name, 0), 3, timeout=30)
        finally:
            await consumer.stop()
            await producer.stop()
    engine.dispose()

    lines = [record for record in caplog.records if record.name == "tests.handler"]
    # The batch of three fails; one by one finds `flaky`, whose retry
    # (alone, by `_consume`) succeeds.
    assert [record.args[0] for record in lines if record.msg.startswith("handling a batch")] == [
        f"{first.get_id()},{second.get_id()},{flaky.get_id()}"
    ]
    assert [record.args[0] for record in lines if record.msg == "handling %s"].count(flaky.get_id()) == 2
    for record in lines:
        assert record.event_id == record.args[0], record.getMessage()
