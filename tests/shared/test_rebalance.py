"""Consumers of one group share partitions; when partitions move between them
(a replica joins or leaves), no event is lost and none has a second effect."""

import asyncio
import uuid

from sqlalchemy import func, insert, select
from sqlmodel import Session

from shared.consumer import IdempotentConsumer
from shared.db import make_engine
from shared.events import new_event, to_kafka
from shared.kafka import make_producer
from shared.migrations import upgrade
from tests.kafka_helpers import create_topic, effects, test_metadata


async def test_partitions_move_between_replicas_without_loss_or_double_effect(
    kafka_bootstrap, topic_name, database_url
):
    upgrade("requests_service", database_url)
    engine = make_engine(database_url)
    test_metadata.create_all(engine)
    await create_topic(kafka_bootstrap, topic_name, partitions=3)
    await create_topic(kafka_bootstrap, topic_name + ".dlq")
    producer = make_producer(kafka_bootstrap, client_id="test")
    await producer.start()
    group = f"g-{uuid.uuid4().hex[:8]}"

    handled: list[str] = []

    def apply_effect(session, event):
        handled.append(event.get_id())
        session.execute(insert(effects).values(event_id=event.get_id()))

    def replica(name: str) -> IdempotentConsumer:
        return IdempotentConsumer(
            engine=engine, bootstrap_servers=kafka_bootstrap, group_id=group, client_id=name,
            topics=[topic_name], handler=apply_effect, producer=producer, dead_letter_topic=topic_name + ".dlq",
        )

    sent: list[str] = []

    async def send(count: int) -> None:
        for _ in range(count):
            event = new_event(type="t.v1", source="/tests/rebalance", data={"n": len(sent)})
            record = to_kafka(event, key=uuid.uuid4().hex)
            await producer.send_and_wait(topic_name, value=record.value, key=record.key, headers=record.headers)
            sent.append(event.get_id())

    async def effects_reach(count: int) -> None:
        for _ in range(300):
            with Session(engine) as session:
                if session.execute(select(func.count()).select_from(effects)).scalar() >= count:
                    return
            await asyncio.sleep(0.2)
        raise AssertionError(f"fewer than {count} effects")

    first, second = replica("first"), replica("second")
    await first.start()
    try:
        await send(30)
        await effects_reach(30)

        await second.start()  # a replica joins: partitions are split
        def split() -> bool:
            mine, theirs = first.assigned_partitions(), second.assigned_partitions()
            return bool(mine) and bool(theirs) and mine.isdisjoint(theirs) and len(mine | theirs) == 3

        for _ in range(150):
            if split():
                break
            await asyncio.sleep(0.2)
        assert split(), "both replicas own partitions, none twice"
        await send(30)
        await effects_reach(60)

        await first.stop()  # a replica leaves: its partitions are committed and handed over
        for _ in range(150):
            if len(second.assigned_partitions()) == 3:
                break
            await asyncio.sleep(0.2)
        assert len(second.assigned_partitions()) == 3
        await send(30)
        await effects_reach(90)
        await asyncio.sleep(1.0)  # room for any duplicate effect to show up

        with Session(engine) as session:
            applied = [row[0] for row in session.execute(select(effects.c.event_id)).all()]
        assert sorted(applied) == sorted(sent), "every event exactly once"
        # The inbox would hide a redelivery; committing on revoke means there is none to hide.
        assert sorted(handled) == sorted(sent), "no event was handed to the handler twice"
    finally:
        await second.stop()
        if first.running:
            await first.stop()
        await producer.stop()
        engine.dispose()
