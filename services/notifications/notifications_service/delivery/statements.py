"""The dispatcher's SQL: claiming due deliveries, loading what sending them
needs, releasing unsent claims, and recording outcomes (the delivery's new
state from the schedule, the attempt row, the outcome events through the
outbox, a 410's endpoint disabled) for a batch of outcomes at once.

Statements are built once, at import: they run for every attempt. Functions
taking a `session` run inside the group commit; the others read on their
own connection.
"""

import logging
import random
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from notifications_service import metrics
from notifications_service.delivery.attempt import Claimed, Outcome
from notifications_service.delivery.schedule import RetryPolicy, next_state
from notifications_service.models import DeliveryAttemptRow, DeliveryRow, NotificationRow, WebhookEndpointRow
from notifications_service.states import AttemptOutcome, DeliveryState
from notifications_service.webhooks import webhook_body
from shared.contracts.notifications import (
    DELIVERY_ATTEMPTED,
    DELIVERY_DEAD,
    NOTIFICATIONS_SOURCE,
    DeliveryAttempted,
    DeliveryDead,
)
from shared.db import table_of
from shared.group_commit import call_after_commit
from shared.messaging_models import as_utc
from shared.outbox import NewEvent, stage_events
from shared.topics import NOTIFICATIONS_DEAD_LETTER, NOTIFICATIONS_DELIVERIES

log = logging.getLogger(__name__)

_DELIVERIES = table_of(DeliveryRow)
_NOTIFICATIONS = table_of(NotificationRow)
_ENDPOINTS = table_of(WebhookEndpointRow)
_INSERT_ATTEMPT = insert(table_of(DeliveryAttemptRow))
_CURRENT = select(_DELIVERIES.c.id, _DELIVERIES.c.attempts).where(
    _DELIVERIES.c.id.in_(bindparam("ids", expanding=True)), _DELIVERIES.c.state == DeliveryState.PENDING)
_CURRENT_FOR_UPDATE = _CURRENT.with_for_update()
_UPDATE_DELIVERY = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id == bindparam("b_id"), _DELIVERIES.c.attempts == bindparam("b_claimed_attempts"))
    .values(state=bindparam("b_state"), attempts=bindparam("b_attempts"),
            schedule_step=bindparam("b_schedule_step"), next_attempt_at=bindparam("b_next_attempt_at"),
            lease_until=None, last_status_code=bindparam("b_last_status_code"),
            last_error=bindparam("b_last_error"), last_attempt_at=bindparam("b_last_attempt_at"),
            delivered_at=bindparam("b_delivered_at"), dead_at=bindparam("b_dead_at"))
)
_RELEASE = (update(_DELIVERIES)
            .where(_DELIVERIES.c.id == bindparam("b_id"), _DELIVERIES.c.lease_until == bindparam("b_lease"))
            .values(lease_until=None))
_DISABLE_ENDPOINT = (
    update(_ENDPOINTS)
    .where(_ENDPOINTS.c.agency_id == bindparam("b_agency_id"), _ENDPOINTS.c.url == bindparam("b_url"))
    .values(enabled=False, disabled_reason="the receiver answered 410 Gone", updated_at=bindparam("b_updated_at"))
)
_LOAD = (
    select(_DELIVERIES.c.id, _DELIVERIES.c.agency_id, _DELIVERIES.c.event_type, _DELIVERIES.c.attempts,
           _DELIVERIES.c.schedule_step, _DELIVERIES.c.next_attempt_at, _NOTIFICATIONS.c.id.label("notification_id"),
           _NOTIFICATIONS.c.event_id, _NOTIFICATIONS.c.event_source, _NOTIFICATIONS.c.subject,
           _NOTIFICATIONS.c.recipient, _NOTIFICATIONS.c.payload, _NOTIFICATIONS.c.event_time,
           _ENDPOINTS.c.url, _ENDPOINTS.c.enabled, _ENDPOINTS.c.secret, _ENDPOINTS.c.previous_secrets,
           _DELIVERIES.c.traceparent, _DELIVERIES.c.tracestate)
    .join(_NOTIFICATIONS, _NOTIFICATIONS.c.id == _DELIVERIES.c.notification_id)
    .outerjoin(_ENDPOINTS, _ENDPOINTS.c.agency_id == _DELIVERIES.c.agency_id)
    .where(_DELIVERIES.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_DELIVERIES.c.next_attempt_at, _DELIVERIES.c.created_at)  # sent in this order
)
_NEXT_DUE = (
    select(_DELIVERIES.c.next_attempt_at)
    .where(_DELIVERIES.c.state == DeliveryState.PENDING,
           or_(_DELIVERIES.c.lease_until.is_(None), _DELIVERIES.c.lease_until < bindparam("now")))
    .order_by(_DELIVERIES.c.next_attempt_at).limit(1)
)


# -- claiming -----------------------------------------------------------------------------
def claim_statement(now: datetime, lease: datetime, limit: int, *, excluding: Sequence[str] = (),
                    agency: str | None = None):
    """Lease up to `limit` due deliveries: of one agency, or of any but the
    `excluding` ones. On PostgreSQL replicas skip each other's rows."""
    conditions = [_DELIVERIES.c.state == DeliveryState.PENDING, _DELIVERIES.c.next_attempt_at <= now,
                  or_(_DELIVERIES.c.lease_until.is_(None), _DELIVERIES.c.lease_until < now)]
    if agency is not None:
        conditions.append(_DELIVERIES.c.agency_id == agency)
    if excluding:
        conditions.append(_DELIVERIES.c.agency_id.not_in(excluding))
    due = (
        select(_DELIVERIES.c.id).where(*conditions)
        .order_by(_DELIVERIES.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite has one writer anyway
    )
    return (update(_DELIVERIES).where(_DELIVERIES.c.id.in_(due.scalar_subquery()))
            .values(lease_until=lease).returning(_DELIVERIES.c.id))


def claim_work(now: datetime, lease: datetime, limit: int,
               struggling_rooms: dict[str, int]) -> Callable[[Session], list[str]]:
    """Work for the group commit that leases up to `limit` due deliveries, of
    each struggling agency at most its room (one UPDATE ... RETURNING for
    the others, one per struggling agency with room); their ids."""
    # Built here, not in the writer's thread: the writer serves everyone.
    others = claim_statement(now, lease, limit, excluding=list(struggling_rooms))

    def claim(session: Session) -> list[str]:
        connection = session.connection()
        ids = list(connection.execute(others).scalars())
        for agency, room in struggling_rooms.items():
            room = min(room, limit - len(ids))
            if room > 0:
                ids += connection.execute(claim_statement(now, lease, room, agency=agency)).scalars()
        return ids

    return claim


def load_claimed(read_engine: Engine, ids: list[str], now: datetime, lease: datetime) -> list[Claimed]:
    """What sending the claimed deliveries needs, oldest first."""
    with read_engine.connect() as connection:
        return [claimed_from(row, now, lease) for row in connection.execute(_LOAD, {"ids": ids})]


def next_due(read_engine: Engine, now: datetime) -> datetime | None:
    """When the next unclaimed pending delivery is due."""
    with read_engine.connect() as connection:
        due = connection.execute(_NEXT_DUE, {"now": now}).scalar()
    return as_utc(due) if due else None


def release(session: Session, claimed: list[Claimed]) -> None:
    """Give up the leases of claimed deliveries that will not be sent now,
    only where the lease is still ours (after it ran out, another
    dispatcher may hold one)."""
    params = [{"b_id": delivery.delivery_id, "b_lease": delivery.lease_until} for delivery in claimed]
    session.connection().execute(_RELEASE, params)


# -- recording ------------------------------------------------------------------------------
def record_outcomes(session: Session, results: list[Outcome], *, policy: RetryPolicy, rng: random.Random,
                    now: datetime) -> None:
    """Each outcome's delivery state, attempt row and events, with one
    statement per kind of row for the lot. Metrics count after the commit."""
    connection = session.connection()
    # Only outcomes for deliveries still as claimed: a manual retry or
    # another replica may have moved one meanwhile.
    current = {row.id: row.attempts for row in connection.execute(
        _CURRENT_FOR_UPDATE if connection.dialect.name == "postgresql" else _CURRENT,
        {"ids": [result.claimed.delivery_id for result in results]})}
    updates, attempts, events, gone, counts = [], [], [], [], []
    for result in results:
        claimed = result.claimed
        if current.get(claimed.delivery_id) != claimed.attempts:
            log.warning("delivery %s changed while it was being attempted; outcome %s not recorded",
                        claimed.delivery_id, result.outcome)
            continue
        step = next_state(attempts=claimed.attempts, schedule_step=claimed.schedule_step, outcome=result.outcome,
                          attempted_at=result.attempted_at, retry_after=result.retry_after, now=now,
                          policy=policy, rng=rng)
        updates.append({
            "b_id": claimed.delivery_id, "b_claimed_attempts": claimed.attempts, "b_state": step.state,
            "b_attempts": step.attempts, "b_schedule_step": step.schedule_step,
            "b_next_attempt_at": step.next_attempt_at, "b_last_status_code": result.status_code,
            "b_last_error": result.error, "b_last_attempt_at": result.attempted_at,
            "b_delivered_at": step.delivered_at, "b_dead_at": step.dead_at})
        attempts.append({
            "delivery_id": claimed.delivery_id, "attempt": step.attempts, "outcome": result.outcome,
            "status_code": result.status_code, "error": result.error, "duration_ms": result.duration_ms,
            "attempted_at": result.attempted_at})
        events.append(NewEvent(
            topic=NOTIFICATIONS_DELIVERIES.name, key=claimed.delivery_id, type=DELIVERY_ATTEMPTED,
            source=NOTIFICATIONS_SOURCE, subject=claimed.delivery_id, data=DeliveryAttempted(
                delivery_id=claimed.delivery_id, notification_id=claimed.notification_id,
                agency_id=claimed.agency_id, event_type=claimed.event_type, attempt=step.attempts,
                outcome=result.outcome, status_code=result.status_code, error=result.error,
                duration_ms=result.duration_ms, attempted_at=result.attempted_at,
                next_attempt_at=step.next_attempt_at).model_dump(mode="json"),
            traceparent=claimed.traceparent, tracestate=claimed.tracestate))
        dead = step.state == DeliveryState.DEAD
        if dead:
            events.append(NewEvent(
                topic=NOTIFICATIONS_DEAD_LETTER.name, key=claimed.delivery_id, type=DELIVERY_DEAD,
                source=NOTIFICATIONS_SOURCE, subject=claimed.delivery_id, data=DeliveryDead(
                    delivery_id=claimed.delivery_id, notification_id=claimed.notification_id,
                    agency_id=claimed.agency_id, event_type=claimed.event_type, attempts=step.attempts,
                    last_status_code=result.status_code, last_error=result.error,
                    dead_at=result.attempted_at).model_dump(mode="json"),
                traceparent=claimed.traceparent, tracestate=claimed.tracestate))
        if result.outcome == AttemptOutcome.ENDPOINT_GONE:
            gone.append({"b_agency_id": claimed.agency_id, "b_url": claimed.url,
                         "b_updated_at": result.attempted_at})
        latency = (now - claimed.event_time).total_seconds() if result.outcome == AttemptOutcome.DELIVERED else None
        counts.append((result.outcome, latency, dead))
    if not updates:
        return
    connection.execute(_UPDATE_DELIVERY, updates)
    connection.execute(_INSERT_ATTEMPT, attempts)
    if gone:
        # Only the URL that answered 410: not one the agency registered meanwhile.
        connection.execute(_DISABLE_ENDPOINT, gone)
    stage_events(session, events)

    def count() -> None:
        for outcome, latency, dead in counts:
            metrics.DELIVERIES.labels(outcome).inc()
            if latency is not None:
                metrics.DELIVERY_LATENCY.observe(max(latency, 0.0))
            if dead:
                metrics.DEAD.inc()

    call_after_commit(session, count)


def claimed_from(row, now: datetime, lease: datetime) -> Claimed:
    """What sending needs, from a delivery row joined with its notification and endpoint."""
    event_time = as_utc(row.event_time)
    usable = row.url is not None and row.enabled
    secrets_in_use: tuple[str, ...] = ()
    if usable:
        secrets_in_use = (row.secret, *(
            previous["secret"] for previous in row.previous_secrets or ()
            if as_utc(datetime.fromisoformat(previous["expires_at"])) > now
        ))
    body = webhook_body(event_type=row.event_type, event_time=event_time, notification={
        "notification_id": row.notification_id, "event_id": row.event_id, "event_source": row.event_source,
        "subject": row.subject, "recipient": row.recipient, "payload": row.payload,
    })
    return Claimed(
        delivery_id=row.id, notification_id=row.notification_id, agency_id=row.agency_id,
        event_type=row.event_type, event_time=event_time, attempts=row.attempts, schedule_step=row.schedule_step,
        body=body, url=row.url if usable else None, secrets_in_use=secrets_in_use, lease_until=lease,
        due_at=as_utc(row.next_attempt_at) if row.next_attempt_at else None, claimed_at=now,
        traceparent=row.traceparent, tracestate=row.tracestate,
    )
