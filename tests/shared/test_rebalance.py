"""Consumers of one group share partitions; when partitions move between them
(a replica joins or leaves), no event is lost and none has a second effect.
Each replica writes through its own group-commit writer, as each service
process does."""

import asyncio
import uuid

from sqlalchemy import func, insert, select
from sqlmodel import Session

from shared.consumer import IdempotentConsumer
from shared.db import make_engine
from shared.events import new_event
from shared.kafka import make_producer
from shared.migrations import upgrade
from tests.kafka_helpers import create_topic, effects, send_event, started_writer, test_metadata, wait_for


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

    def replica(name: str, writer) -> IdempotentConsumer:
        return IdempotentConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=group, client_id=name, topics=[topic_name],
            handler=apply_effect, producer=producer, dead_letter_topic=topic_name + ".dlq", writer=writer,
        )

    sent: list[str] = []

    async def send(count: int) -> None:
        for _ in range(count):
            event = new_event(type="t.v1", source="/tests/rebalance", data={"n": len(sent)})
            await send_event(producer, topic_name, event, key=uuid.uuid4().hex)
            sent.append(event.get_id())

    async def send_markers() -> set[str]:
        """One more event on every partition: once each is handled, so is
        anything delivered before it, a redelivery included."""
        markers = set()
        for partition in range(3):
            event = new_event(type="t.marker.v1", source="/tests/rebalance", data={"partition": partition})
            await send_event(producer, topic_name, event, key=uuid.uuid4().hex, partition=partition)
            markers.add(event.get_id())
        return markers

    async def effects_reach(count: int) -> None:
        for _ in range(300):
            with Session(engine) as session:
                if session.execute(select(func.count()).select_from(effects)).scalar() >= count:
                    return
            await asyncio.sleep(0.2)
        raise AssertionError(f"fewer than {count} effects")

    async with started_writer(engine) as first_writer, started_writer(engine) as second_writer:
        first, second = replica("first", first_writer), replica("second", second_writer)
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
            markers = await send_markers()
            assert await wait_for(lambda: markers <= set(handled), timeout=60), "every marker handled"

            with Session(engine) as session:
                applied = [row[0] for row in session.execute(select(effects.c.event_id)).all()]
            assert sorted(applied) == sorted(sent + list(markers)), "every event exactly once"
            # The inbox would hide a redelivery; committing on revoke means there is none to hide.
            assert sorted(handled) == sorted(sent + list(markers)), "no event was handed to the handler twice"
        finally:
            await second.stop()
            if first.worker.started:
                await first.stop()
            await producer.stop()
    engine.dispose()
