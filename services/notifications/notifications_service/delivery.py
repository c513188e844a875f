"""Pushing notifications to webhooks, with retries whose state lives in the
database.

A delivery row is due when it is `pending` and its `next_attempt_at` has
come. The dispatcher claims due rows for a while (`lease_until`), sends each
one, and records the outcome, the delivery's new state and the outcome events
(`notifications.deliveries`, and `notifications.dead-letter` when it is dead)
in one transaction, through the outbox. A restart therefore resumes every
schedule where it stood. Delivery is at least once: an attempt the receiver
accepted just before a crash, before its outcome was recorded, is sent again
after the lease runs out, with the same `webhook-id`, so receivers can drop it.
"""

import asyncio
import email.utils
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import or_, select, update
from sqlmodel import Session, col

from notifications_service import metrics
from notifications_service.config import NotificationsSettings
from notifications_service.models import DeliveryAttemptRow, DeliveryRow, NotificationRow, WebhookEndpointRow
from notifications_service.webhooks import USER_AGENT, AddressGuard, UnsafeWebhookUrl, sign, webhook_body
from shared.contracts.notifications import (
    DELIVERY_ATTEMPTED,
    DELIVERY_DEAD,
    NOTIFICATIONS_SOURCE,
    DeliveryAttempted,
    DeliveryDead,
)
from shared.group_commit import GroupCommitWriter, call_after_commit
from shared.messaging_models import as_utc, utcnow
from shared.outbox import stage_new_event
from shared.tasks import cancel_and_wait
from shared.topics import NOTIFICATIONS_DEAD_LETTER, NOTIFICATIONS_DELIVERIES

log = logging.getLogger(__name__)


# -- the schedule (pure) -------------------------------------------------------------
def retry_delay(schedule: list[float], failures: int, *, jitter: float, rng: random.Random = random) -> float | None:
    """Seconds until the next attempt after `failures` failures in a row, or
    None when the schedule is exhausted."""
    if failures > len(schedule):
        return None
    base = schedule[failures - 1]
    return base * rng.uniform(1 - jitter, 1 + jitter) if jitter else base


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


# -- one attempt ---------------------------------------------------------------------
@dataclass(frozen=True)
class Claimed:
    """A due delivery with what sending it needs."""

    delivery_id: str
    notification_id: str
    agency_id: str
    event_type: str
    event_time: datetime
    attempts: int
    schedule_step: int
    body: bytes
    url: str | None  # None: the endpoint is gone or disabled
    secrets_in_use: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    claimed: Claimed
    outcome: str  # delivered | failed | endpoint_gone | endpoint_disabled | refused_address
    status_code: int | None
    error: str | None
    duration_ms: float
    attempted_at: datetime
    retry_after: float | None = None


class Dispatcher:
    def __init__(self, *, engine, read_engine, writer: GroupCommitWriter, settings: NotificationsSettings,
                 rng: random.Random | None = None) -> None:
        self.engine = engine
        self.read_engine = read_engine
        self.writer = writer
        self.settings = settings
        self.rng = rng or random.Random()
        self.guard = AddressGuard(allow_private=settings.webhook_allow_private_addresses)
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._in_flight: dict[str, asyncio.Task] = {}
        self._slots = asyncio.Semaphore(settings.delivery_concurrency)
        self._client: httpx.AsyncClient | None = None
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        limits = httpx.Limits(max_connections=self.settings.delivery_concurrency,
                              max_keepalive_connections=self.settings.delivery_concurrency)
        self._client = httpx.AsyncClient(timeout=self.settings.webhook_timeout_seconds, limits=limits,
                                         follow_redirects=False, headers={"user-agent": USER_AGENT})
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        """Stop claiming; let attempts in flight finish and be recorded (they
        are bounded by the timeout), so a restart does not send them again."""
        self._stopping = True
        await cancel_and_wait(self._task)
        if self._in_flight:
            await asyncio.wait(list(self._in_flight.values()), timeout=self.settings.webhook_timeout_seconds + 5)
        if self._client is not None:
            await self._client.aclose()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """Safe from any thread: new deliveries were committed."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wakeup.set)

    # -- the loop --------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stopping:
            try:
                claimed, next_due = await self._claim()
            except Exception:
                log.exception("claiming due deliveries failed; trying again")
                await asyncio.sleep(self.settings.delivery_poll_interval_seconds)
                continue
            for delivery in claimed:
                await self._slots.acquire()
                task = asyncio.create_task(self._attempt(delivery), name=f"delivery-{delivery.delivery_id}")
                self._in_flight[delivery.delivery_id] = task
            if len(claimed) >= self.settings.delivery_batch_size:
                continue  # more may be due already
            wait = self.settings.delivery_poll_interval_seconds
            if next_due is not None:
                wait = min(wait, max((next_due - datetime.now(UTC)).total_seconds(), 0.0))
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=wait)
            except TimeoutError:
                pass

    async def _claim(self) -> tuple[list[Claimed], datetime | None]:
        now = utcnow()
        # Long enough for the whole batch to be sent through the available
        # slots; after that another dispatcher may take a delivery over.
        rounds = -(-self.settings.delivery_batch_size // self.settings.delivery_concurrency) + 1
        lease = now + timedelta(seconds=self.settings.webhook_timeout_seconds * rounds + 30)
        skip = set(self._in_flight)
        limit = self.settings.delivery_batch_size

        def work(session: Session) -> tuple[list[Claimed], datetime | None]:
            due = (
                select(DeliveryRow, NotificationRow, WebhookEndpointRow)
                .join(NotificationRow, col(NotificationRow.id) == col(DeliveryRow.notification_id))
                .outerjoin(WebhookEndpointRow, col(WebhookEndpointRow.agency_id) == col(DeliveryRow.agency_id))
                .where(col(DeliveryRow.state) == "pending", col(DeliveryRow.next_attempt_at) <= now,
                       or_(col(DeliveryRow.lease_until).is_(None), col(DeliveryRow.lease_until) < now))
                .order_by(col(DeliveryRow.next_attempt_at))
                .limit(limit + len(skip))
            )
            if session.get_bind().dialect.name == "postgresql":
                due = due.with_for_update(of=DeliveryRow, skip_locked=True)
            claimed = []
            for delivery, notification, endpoint in session.execute(due).all():
                if delivery.id in skip or len(claimed) >= limit:
                    continue
                claimed.append(_claimed(delivery, notification, endpoint, now))
            if claimed:
                session.execute(update(DeliveryRow).where(col(DeliveryRow.id).in_([c.delivery_id for c in claimed]))
                                .values(lease_until=lease))
            next_due = session.execute(
                select(col(DeliveryRow.next_attempt_at))
                .where(col(DeliveryRow.state) == "pending",
                       or_(col(DeliveryRow.lease_until).is_(None), col(DeliveryRow.lease_until) < now))
                .order_by(col(DeliveryRow.next_attempt_at)).limit(1)
            ).scalar()
            return claimed, as_utc(next_due) if next_due else None

        return await self.writer.run(work)

    async def _attempt(self, claimed: Claimed) -> None:
        try:
            outcome = await self._send(claimed)
            await self.writer.run(lambda session: self._record(session, outcome))
        except Exception:
            # Not recorded: the lease runs out and the delivery is tried again.
            log.exception("delivery %s could not be attempted or recorded", claimed.delivery_id)
        finally:
            self._in_flight.pop(claimed.delivery_id, None)
            self._slots.release()

    async def _send(self, claimed: Claimed) -> Outcome:
        started = time.perf_counter()
        attempted_at = utcnow()

        def ended(outcome: str, status: int | None = None, error: str | None = None,
                  retry_after: float | None = None) -> Outcome:
            return Outcome(claimed, outcome, status, error, round((time.perf_counter() - started) * 1000, 2),
                           attempted_at, retry_after)

        if claimed.url is None:
            return ended("endpoint_disabled", error="the agency has no enabled webhook endpoint")
        try:
            await self.guard.check(claimed.url)
        except UnsafeWebhookUrl as error:
            return ended("refused_address", error=error.detail[:500])
        signed = sign(delivery_id=claimed.delivery_id, body=claimed.body, secrets_in_use=list(claimed.secrets_in_use))
        try:
            response = await self._client.post(claimed.url, content=signed.body, headers=signed.headers)
        except httpx.TimeoutException:
            return ended("failed", error=f"timeout after {self.settings.webhook_timeout_seconds:g} s")
        except httpx.HTTPError as error:
            return ended("failed", error=f"{type(error).__name__}: {error}"[:500])
        status = response.status_code
        if 200 <= status < 300:
            return ended("delivered", status)
        if status == 410:
            return ended("endpoint_gone", status, "the receiver answered 410 Gone")
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(response.headers.get("retry-after"), now=datetime.now(UTC))
        return ended("failed", status, f"HTTP {status}", retry_after)

    # -- recording (inside the group commit) -------------------------------------------
    def _record(self, session: Session, result: Outcome) -> None:
        claimed, now = result.claimed, result.attempted_at
        attempt = claimed.attempts + 1
        failures = claimed.schedule_step + 1
        values: dict = {"attempts": attempt, "lease_until": None, "last_status_code": result.status_code,
                        "last_error": result.error, "last_attempt_at": now}
        next_attempt_at = None
        if result.outcome == "delivered":
            values |= {"state": "delivered", "delivered_at": now, "next_attempt_at": None}
        elif result.outcome in ("endpoint_gone", "endpoint_disabled"):
            values |= {"state": "dead", "dead_at": now, "next_attempt_at": None, "schedule_step": failures}
        else:
            delay = retry_delay(self.settings.webhook_retry_schedule_seconds, failures,
                                jitter=self.settings.webhook_retry_jitter, rng=self.rng)
            if delay is not None and result.retry_after is not None:
                delay = min(max(delay, result.retry_after), self.settings.webhook_retry_after_max_seconds)
            if delay is None:
                values |= {"state": "dead", "dead_at": now, "next_attempt_at": None, "schedule_step": failures}
            else:
                next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay)
                values |= {"next_attempt_at": next_attempt_at, "schedule_step": failures}
        # Only if still ours: a manual retry or another replica may have moved it.
        updated = session.execute(
            update(DeliveryRow).where(col(DeliveryRow.id) == claimed.delivery_id, col(DeliveryRow.state) == "pending",
                                      col(DeliveryRow.attempts) == claimed.attempts).values(**values)
        ).rowcount
        if not updated:
            log.warning("delivery %s changed while it was being attempted; outcome %s not recorded",
                        claimed.delivery_id, result.outcome)
            return
        session.add(DeliveryAttemptRow(delivery_id=claimed.delivery_id, attempt=attempt, outcome=result.outcome,
                                       status_code=result.status_code, error=result.error,
                                       duration_ms=result.duration_ms, attempted_at=now))
        if result.outcome == "endpoint_gone":
            session.execute(update(WebhookEndpointRow).where(col(WebhookEndpointRow.agency_id) == claimed.agency_id)
                            .values(enabled=False, disabled_reason="the receiver answered 410 Gone",
                                    updated_at=now))
        stage_new_event(session, topic=NOTIFICATIONS_DELIVERIES.name, key=claimed.delivery_id,
                        type=DELIVERY_ATTEMPTED, source=NOTIFICATIONS_SOURCE, subject=claimed.delivery_id,
                        data=DeliveryAttempted(
                            delivery_id=claimed.delivery_id, notification_id=claimed.notification_id,
                            agency_id=claimed.agency_id, event_type=claimed.event_type, attempt=attempt,
                            outcome=result.outcome,
                            status_code=result.status_code, error=result.error, duration_ms=result.duration_ms,
                            attempted_at=now, next_attempt_at=next_attempt_at,
                        ).model_dump(mode="json"))
        dead = values.get("state") == "dead"
        if dead:
            stage_new_event(session, topic=NOTIFICATIONS_DEAD_LETTER.name, key=claimed.delivery_id,
                            type=DELIVERY_DEAD, source=NOTIFICATIONS_SOURCE, subject=claimed.delivery_id,
                            data=DeliveryDead(
                                delivery_id=claimed.delivery_id, notification_id=claimed.notification_id,
                                agency_id=claimed.agency_id, event_type=claimed.event_type, attempts=attempt,
                                last_status_code=result.status_code, last_error=result.error, dead_at=now,
                            ).model_dump(mode="json"))
        outcome_label = result.outcome
        latency = (datetime.now(UTC) - claimed.event_time).total_seconds() if outcome_label == "delivered" else None

        def count() -> None:
            metrics.DELIVERIES.labels(outcome_label).inc()
            if latency is not None:
                metrics.DELIVERY_LATENCY.observe(max(latency, 0.0))
            if dead:
                metrics.DEAD.inc()

        call_after_commit(session, count)


def _claimed(delivery: DeliveryRow, notification: NotificationRow, endpoint: WebhookEndpointRow | None,
             now: datetime) -> Claimed:
    event_time = as_utc(notification.event_time)
    usable = endpoint is not None and endpoint.enabled
    secrets_in_use: tuple[str, ...] = ()
    if usable:
        secrets_in_use = (endpoint.secret,)
        expires = endpoint.previous_secret_expires_at
        if endpoint.previous_secret and expires and as_utc(expires) > now:
            secrets_in_use += (endpoint.previous_secret,)
    body = webhook_body(event_type=notification.event_type, event_time=event_time, notification={
        "notification_id": notification.id, "event_id": notification.event_id,
        "event_source": notification.event_source, "subject": notification.subject,
        "recipient": notification.recipient, "payload": notification.payload,
    })
    return Claimed(
        delivery_id=delivery.id, notification_id=notification.id, agency_id=delivery.agency_id,
        event_type=delivery.event_type, event_time=event_time, attempts=delivery.attempts,
        schedule_step=delivery.schedule_step, body=body, url=endpoint.url if usable else None,
        secrets_in_use=secrets_in_use,
    )
