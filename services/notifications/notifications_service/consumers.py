"""From events to notifications: one per (event, recipient), never two."""

import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from functools import partial
from types import SimpleNamespace
from typing import Any, Protocol

from cloudevents.core.v1.event import CloudEvent
from pydantic import ValidationError
from sqlalchemy import bindparam, insert
from sqlalchemy import select as core_select
from sqlmodel import Session, select

from notifications_service import metrics
from notifications_service.delivery.attempt import Claimed
from notifications_service.delivery.statements import claimed_from
from notifications_service.models import AgencyRow, DeliveryRow, NotificationRow, WebhookEndpointRow
from notifications_service.routing import RoutingRules, recipients_for
from notifications_service.states import DeliveryState
from shared.consumer import PoisonMessage
from shared.contracts.catalog import COMMITMENT_PUBLISHED, CommitmentPublished
from shared.db import table_of
from shared.group_commit import call_after_commit
from shared.messaging_models import utcnow
from shared.tracing import trace_headers_for

_ENDPOINTS = table_of(WebhookEndpointRow)
# Statements built once: these run for every event.
_ENDPOINTS_OF = core_select(_ENDPOINTS.c.agency_id, _ENDPOINTS.c.event_types, _ENDPOINTS.c.enabled, _ENDPOINTS.c.url,
                            _ENDPOINTS.c.secret, _ENDPOINTS.c.previous_secrets).where(
    _ENDPOINTS.c.agency_id.in_(bindparam("agency_ids", expanding=True)))
_INSERT_NOTIFICATION = insert(table_of(NotificationRow))
_INSERT_DELIVERY = insert(table_of(DeliveryRow))
_TICK = timedelta(microseconds=1)  # events of one run get increasing times
_NEW_DELIVERY = {
    "state": DeliveryState.PENDING, "attempts": 0, "schedule_step": 0, "lease_until": None, "last_status_code": None,
    "last_error": None, "last_attempt_at": None, "delivered_at": None, "dead_at": None,
}


class DeliveryHandOff(Protocol):
    """The dispatcher, as the router sees it (see `Dispatcher.claim_at_creation`)."""

    def claim_at_creation(self, agency_ids: list[str]) -> tuple[datetime, datetime, list[bool]]: ...

    def take_over(self, claimed: list[Claimed]) -> None: ...


def make_handler(rules: RoutingRules, identity_agencies: Callable[[str], Iterable[str]],
                 deliveries_created: Callable[[], None] = lambda: None,
                 hand_off: Callable[[], DeliveryHandOff | None] = lambda: None) -> "NotificationRouter":
    return NotificationRouter(rules, identity_agencies, deliveries_created, hand_off)


class NotificationRouter:
    """The consumer's handler. `identity_agencies(country)`: partner agencies
    of a country known to identity. `deliveries_created()` is called once
    webhook deliveries are committed (it wakes the dispatcher). `hand_off()`:
    this replica's dispatcher once it runs; it claims the new deliveries it
    has room for in the transaction that creates them, and they are handed
    to it after the commit, so they need no claim of their own.

    A backlog goes through `handle_many`: one query for the recipients'
    endpoints and one INSERT per table for the whole run."""

    def __init__(self, rules: RoutingRules, identity_agencies: Callable[[str], Iterable[str]],
                 deliveries_created: Callable[[], None],
                 hand_off: Callable[[], DeliveryHandOff | None] = lambda: None) -> None:
        self.rules = rules
        self.identity_agencies = identity_agencies
        self.deliveries_created = deliveries_created
        self.hand_off = hand_off

    def __call__(self, session: Session, event: CloudEvent) -> str:
        return self.handle_many(session, [event])[0]

    def handle_many(self, session: Session, events: list[CloudEvent]) -> list[str]:
        outcomes: list[str] = []
        routed: list[tuple[int, CloudEvent, dict, list[str]]] = []  # (outcome index, event, data, recipients)
        country_agencies: dict[str, set[str]] = {}

        def agencies_of_country(country: str) -> set[str]:
            if country not in country_agencies:
                known = set(session.exec(select(AgencyRow.agency_id).where(AgencyRow.country == country)).all())
                country_agencies[country] = known | set(self.identity_agencies(country))
            return country_agencies[country]

        for event in events:
            if event.get_type() == COMMITMENT_PUBLISHED:
                outcomes.append(_learn_agencies(session, event))
                country_agencies.clear()  # the directory just changed
                continue
            if event.get_type() not in self.rules.rules:
                outcomes.append("ignored")
                continue
            data = event.get_data() or {}
            if not isinstance(data, dict):
                raise PoisonMessage(f"{event.get_type()} carries {type(data).__name__} data, not a JSON object")
            recipients = recipients_for(self.rules, event.get_type(), data, agencies_of_country)
            routed.append((len(outcomes), event, data, recipients))
            outcomes.append("ignored")  # until a notification is made for it
        every_recipient = {recipient for *_, recipients in routed for recipient in recipients}
        endpoints = {
            endpoint.agency_id: endpoint
            for endpoint in session.connection().execute(_ENDPOINTS_OF, {"agency_ids": list(every_recipient)})
        } if every_recipient else {}

        notifications: list[dict] = []
        deliveries: list[dict] = []
        sending: list[tuple[dict, Any]] = []  # each delivery's notification and endpoint, for a claim at creation
        created: Counter[str] = Counter()
        now = utcnow() - _TICK
        for index, event, data, recipients in routed:
            # Each event a later time than the one before: listings and claims
            # follow it, so a run keeps the order its events came in.
            now = max(utcnow(), now + _TICK)
            event_type = event.get_type()
            event_time = (event.get_time() or now).astimezone(UTC)  # SQLite keeps no offset: store UTC
            for recipient in recipients:
                endpoint = endpoints.get(recipient)
                if endpoint is not None and endpoint.event_types and event_type not in endpoint.event_types:
                    continue  # the agency narrowed what it receives
                notification_id = str(uuid.uuid4())
                notifications.append({
                    "id": notification_id, "event_source": event.get_source(), "event_id": event.get_id(),
                    "event_type": event_type, "subject": event.get_subject(), "recipient": recipient,
                    "payload": data, "event_time": event_time, "created_at": now, "acknowledged_at": None,
                })
                created[event_type] += 1
                outcomes[index] = "processed"
                if endpoint is not None and endpoint.enabled:
                    traceparent, tracestate = trace_headers_for(event)
                    deliveries.append(_NEW_DELIVERY | {
                        "id": f"msg_{uuid.uuid4().hex}", "notification_id": notification_id, "agency_id": recipient,
                        "event_type": event_type, "next_attempt_at": now, "created_at": now,
                        "traceparent": traceparent, "tracestate": tracestate,
                    })
                    sending.append((notifications[-1], endpoint))
        # Plain INSERTs, not ORM objects: this runs for every event.
        connection = session.connection()
        if notifications:
            connection.execute(_INSERT_NOTIFICATION, notifications)
        if deliveries:
            claimed = self._claim_at_creation(session, deliveries, sending)
            connection.execute(_INSERT_DELIVERY, deliveries)
            if claimed < len(deliveries):
                call_after_commit(session, self.deliveries_created)
        if created:
            def count() -> None:
                for event_type, number in created.items():
                    metrics.NOTIFICATIONS_CREATED.labels(event_type).inc(number)

            call_after_commit(session, count)
        return outcomes

    def _claim_at_creation(self, session: Session, deliveries: list[dict], sending: list[tuple[dict, Any]]) -> int:
        """Lease the deliveries the dispatcher takes at once (in these rows,
        in this transaction) and hand them over after the commit, with what
        sending them needs (so it is not read back); how many."""
        dispatcher = self.hand_off()
        if dispatcher is None:
            return 0
        claimed_at, lease, taken = dispatcher.claim_at_creation([delivery["agency_id"] for delivery in deliveries])
        claimed = []
        for delivery, (notification, endpoint), take in zip(deliveries, sending, taken, strict=True):
            if take:
                delivery["lease_until"] = lease
                claimed.append(claimed_from(SimpleNamespace(
                    **delivery, event_id=notification["event_id"], event_source=notification["event_source"],
                    subject=notification["subject"], recipient=notification["recipient"],
                    payload=notification["payload"], event_time=notification["event_time"], url=endpoint.url,
                    enabled=endpoint.enabled, secret=endpoint.secret, previous_secrets=endpoint.previous_secrets,
                ), claimed_at, lease))
        if claimed:
            call_after_commit(session, partial(dispatcher.take_over, claimed))
        return len(claimed)


def _learn_agencies(session: Session, event: CloudEvent) -> str:
    """The catalog names the agencies responsible for each commitment: keep them in the directory."""
    try:
        published = CommitmentPublished.model_validate(event.get_data())
    except ValidationError as error:
        raise PoisonMessage(f"not a valid commitment: {error.error_count()} errors") from error
    for agency in published.commitment.responsible_agencies:
        row = session.get(AgencyRow, agency.id) or AgencyRow(agency_id=agency.id, source="catalog")
        row.country, row.name, row.updated_at = agency.country, agency.name, utcnow()
        session.add(row)
    return "processed"
