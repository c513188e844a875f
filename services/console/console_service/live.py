"""Live updates: the console follows `requests.events` and
`notifications.deliveries`, and fans each event out to the open browser
streams whose users may see it.

- `LiveFeed` reads the topic without a consumer group and without committed
  offsets, from its end: the console keeps no state, so a restart only means
  the open pages get events from then on (they reconnect by themselves).
- `LiveHub` holds one bounded queue per open stream. An event goes to a
  stream only if its user may see it, by the requests API's rule: coordinators
  and operators everything; a partner agency its own country's requests and
  those under commitments the catalog names it responsible for (the events
  carry `responsible_agencies` for this), and its own webhook deliveries.
- A stream that does not keep up (its queue full) is ended rather than
  allowed to hold memory; the browser's EventSource reconnects and the page
  reloads its data from the APIs.
"""

import asyncio
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from aiokafka import AIOKafkaConsumer

from shared.contracts.notifications import DELIVERY_ATTEMPTED
from shared.contracts.requests import (
    OFFER_ACTIVATED,
    REQUEST_STALE,
    REQUEST_STATUS_CHANGED,
    REQUEST_SUBMITTED,
)
from shared.events import InvalidEvent, from_kafka
from shared.identity import Principal
from shared.kafka import read_whole_topics
from shared.topics import NOTIFICATIONS_DELIVERIES, REQUESTS_EVENTS
from shared.workers import SupervisedWorker

log = logging.getLogger(__name__)

# The event types pages react to, by the short name the browser sees.
LIVE_EVENT_NAMES = {
    REQUEST_SUBMITTED: "request-submitted",
    REQUEST_STATUS_CHANGED: "request-status-changed",
    REQUEST_STALE: "request-stale",
    OFFER_ACTIVATED: "offer-activated",
    DELIVERY_ATTEMPTED: "delivery-attempted",
}
# What the console follows (`LiveFeed`'s topics).
LIVE_TOPICS = (REQUESTS_EVENTS, NOTIFICATIONS_DELIVERIES)
# Events waiting for one browser: a burst of a thousand fits; a stream that
# falls further behind than this is ended (it reconnects and reloads).
STREAM_QUEUE_SIZE = 4096


@dataclass(frozen=True)
class LiveEvent:
    name: str
    request_id: str | None
    commitment_id: str | None
    countries: tuple[str, ...]
    agencies: tuple[str, ...]
    """The requesting agency and the agencies responsible for the commitment;
    for a delivery, the agency it is for."""
    status: str | None = None
    delivery_id: str | None = None

    @cached_property
    def server_sent_event(self) -> str:
        """The event as the browser gets it, made once for every stream: which
        request or offer changed, not its content (the page fetches that from
        the APIs with its user's key)."""
        data = json.dumps({"request_id": self.request_id, "commitment_id": self.commitment_id,
                           "delivery_id": self.delivery_id, "status": self.status})
        return f"event: {self.name}\ndata: {data}\n\n"

    @classmethod
    def from_cloudevent(cls, event_type: str, data: dict[str, Any]) -> "LiveEvent | None":
        name = LIVE_EVENT_NAMES.get(event_type)
        if name is None:
            return None
        agencies = [*data.get("responsible_agencies", [])]
        for agency_field in ("agency_id", "requesting_agency_id"):
            if data.get(agency_field):
                agencies.append(data[agency_field])
        countries = data.get("countries") or ([data["country"]] if data.get("country") else [])
        status = data.get("to_status") or data.get("status") or data.get("outcome")
        if event_type == REQUEST_SUBMITTED:
            status = "submitted"
        return cls(
            name=name, request_id=data.get("request_id"), commitment_id=data.get("commitment_id"),
            countries=tuple(countries), agencies=tuple(agencies), status=status, delivery_id=data.get("delivery_id"),
        )


def may_see(principal: Principal, event: LiveEvent) -> bool:
    """The requests API's visibility rule (requests_service.service.can_see)."""
    if principal.role in ("coordinator", "operator"):
        return True
    if principal.country is not None and principal.country in event.countries:
        return True
    return principal.agency_id is not None and principal.agency_id in event.agencies


@dataclass(eq=False)
class LiveStream:
    principal: Principal
    queue: asyncio.Queue[LiveEvent] = field(default_factory=lambda: asyncio.Queue(STREAM_QUEUE_SIZE))
    overflowed: bool = False


class LiveHub:
    def __init__(self) -> None:
        self._streams: set[LiveStream] = set()

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def open(self, principal: Principal) -> LiveStream:
        stream = LiveStream(principal)
        self._streams.add(stream)
        return stream

    def close(self, stream: LiveStream) -> None:
        self._streams.discard(stream)

    def publish(self, event: LiveEvent) -> int:
        """Hands the event to every stream that may see it; returns how many."""
        reached = 0
        for stream in list(self._streams):
            if not may_see(stream.principal, event):
                continue
            try:
                stream.queue.put_nowait(event)
                reached += 1
            except asyncio.QueueFull:
                stream.overflowed = True
                self._streams.discard(stream)
        return reached


class LiveFeed:
    """Follows the topics from their end and publishes to the hub."""

    def __init__(self, bootstrap_servers: str, hub: LiveHub, *,
                 topics: Iterable[str] = (REQUESTS_EVENTS.name, NOTIFICATIONS_DELIVERIES.name)) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.hub = hub
        self.topics = tuple(topics)
        self._consumer: AIOKafkaConsumer | None = None
        self.worker = SupervisedWorker("live-feed", self._follow)

    async def start(self) -> None:
        self._consumer = await read_whole_topics(self.bootstrap_servers, self.topics, client_id="caj-console-live",
                                                 from_end=True)
        self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()
        if self._consumer:
            await self._consumer.stop()

    @property
    def running(self) -> bool:
        return self.worker.running

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    self.apply(record.key, record.value, record.headers)

    def apply(self, key: bytes | None, value: bytes | None, headers) -> None:
        try:
            event = from_kafka(key=key, value=value, headers=headers)
        except InvalidEvent as error:
            log.warning("live feed: ignoring a malformed record %r: %s", key, error)
            return
        data = event.get_data()
        live = LiveEvent.from_cloudevent(event.get_type(), data if isinstance(data, dict) else {})
        if live is not None:
            self.hub.publish(live)
