"""The console's live feed on a real broker: it follows every partition of
the topic from its end, and hands each event to the streams that may see it."""

import uuid

from aiokafka import AIOKafkaProducer

from console_service.live import LiveFeed, LiveHub
from shared.contracts.requests import REQUEST_STATUS_CHANGED, REQUEST_SUBMITTED, REQUESTS_SOURCE
from shared.events import new_event
from shared.identity import Principal
from tests.console.conftest import run_async
from tests.kafka_helpers import create_topic, send_event, wait_for

COORDINATOR = Principal(key_id="c", role="coordinator", agency_id=None, country=None)
TJ_BORDER = Principal(key_id="t", role="partner", agency_id="tj-border-service", country="TJ")
KZ_MFA = Principal(key_id="k", role="partner", agency_id="kz-mfa", country="KZ")
PARTITIONS = 6


def request_event(event_type: str, request_id: str, country: str, agency: str) -> object:
    data = {"request_id": request_id, "commitment_id": "caj-2006-2-1-04", "country": country, "agency_id": agency,
            "responsible_agencies": ["jica"], "title": "t", "from_status": "submitted", "to_status": "under_review"}
    return new_event(type=event_type, source=REQUESTS_SOURCE, subject=request_id, data=data)


def test_the_feed_reads_every_partition_from_its_end_and_scopes_each_stream(kafka_bootstrap):
    # In a thread: the browser tests keep an event loop running in this one.
    run_async(lambda: feed_scenario(kafka_bootstrap))


async def feed_scenario(kafka_bootstrap: str) -> None:
    topic = f"console-live-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka_bootstrap, topic, partitions=PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    hub = LiveHub()
    feed = LiveFeed(kafka_bootstrap, hub, topics=(topic,))
    try:
        # Published before the console started: not replayed (it keeps no state, pages load from the APIs).
        await send_event(producer, topic, request_event(REQUEST_SUBMITTED, "before", "TJ", "tj-border-service"),
                         key="before", partition=0)
        await feed.start()
        coordinator, tajik, kazakh = hub.open(COORDINATOR), hub.open(TJ_BORDER), hub.open(KZ_MFA)
        for partition in range(PARTITIONS):
            country, agency = ("TJ", "tj-border-service") if partition % 2 == 0 else ("KZ", "kz-mfa")
            event_type = REQUEST_SUBMITTED if partition < 3 else REQUEST_STATUS_CHANGED
            await send_event(producer, topic, request_event(event_type, f"r-{partition}", country, agency),
                             key=f"r-{partition}", partition=partition)
        await producer.send_and_wait(topic, value=b"not an event", key=b"junk", partition=1)  # ignored, not fatal

        assert await wait_for(lambda: coordinator.queue.qsize() == PARTITIONS, timeout=30), coordinator.queue.qsize()
        seen = [coordinator.queue.get_nowait() for _ in range(PARTITIONS)]
        assert sorted(event.request_id or "" for event in seen) == [f"r-{p}" for p in range(PARTITIONS)]
        assert {event.name for event in seen} == {"request-submitted", "request-status-changed"}
        tajik_seen = {tajik.queue.get_nowait().request_id for _ in range(tajik.queue.qsize())}
        kazakh_seen = {kazakh.queue.get_nowait().request_id for _ in range(kazakh.queue.qsize())}
        assert tajik_seen == {"r-0", "r-2", "r-4"} and kazakh_seen == {"r-1", "r-3", "r-5"}
        assert feed.running
    finally:
        await feed.stop()
        await producer.stop()
