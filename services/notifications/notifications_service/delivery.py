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

import aiohttp
from sqlalchemy import insert, or_, select, update
from sqlmodel import Session

from notifications_service import metrics
from notifications_service.config import NotificationsSettings
from notifications_service.models import DeliveryAttemptRow, DeliveryRow, NotificationRow, WebhookEndpointRow
from notifications_service.webhooks import (
    USER_AGENT,
    AddressGuard,
    RefusedAddress,
    UnsafeWebhookUrl,
    sign,
    webhook_body,
)
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
        self._slot_freed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._in_flight: dict[str, asyncio.Task] = {}
        self._client: aiohttp.ClientSession | None = None
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # aiohttp, not httpx, for this client: at 64 concurrent requests httpx
        # managed about 260 POSTs/s here, aiohttp about 10,000 (BENCHMARKS.md).
        # Its total timeout bounds a whole attempt, however slowly the
        # receiver trickles its answer.
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.settings.delivery_concurrency, resolver=self.guard.resolver()),
            timeout=aiohttp.ClientTimeout(total=self.settings.webhook_timeout_seconds),
            headers={"user-agent": USER_AGENT}, auto_decompress=False,
        )
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        """Stop claiming; let attempts in flight finish and be recorded (each
        is bounded by the timeout), so a restart does not send them again."""
        self._stopping = True
        await cancel_and_wait(self._task)
        if self._in_flight:
            await asyncio.wait(list(self._in_flight.values()), timeout=self.settings.webhook_timeout_seconds + 5)
        if self._client is not None:
            await self._client.close()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """Safe from any thread: new deliveries were committed."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wakeup.set)

    # -- the loop --------------------------------------------------------------------
    async def _run(self) -> None:
        concurrency = self.settings.delivery_concurrency
        while not self._stopping:
            # Claim only what can start at once: a claimed delivery is sent
            # straight away, well within its lease.
            free = concurrency - len(self._in_flight)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            self._wakeup.clear()
            try:
                claimed = await self._claim(min(free, self.settings.delivery_batch_size))
            except Exception:
                log.exception("claiming due deliveries failed; trying again")
                await asyncio.sleep(self.settings.delivery_poll_interval_seconds)
                continue
            for delivery in claimed:
                self._in_flight[delivery.delivery_id] = asyncio.create_task(
                    self._attempt(delivery), name=f"delivery-{delivery.delivery_id}")
            if claimed:
                continue  # more may be due already
            wait = self.settings.delivery_poll_interval_seconds
            next_due = await asyncio.to_thread(self._next_due)
            if next_due is not None:
                wait = min(wait, max((next_due - datetime.now(UTC)).total_seconds(), 0.01))
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=wait)
            except TimeoutError:
                pass

    async def _claim(self, limit: int) -> list[Claimed]:
        """Lease up to `limit` due deliveries (one UPDATE ... RETURNING; on
        PostgreSQL replicas skip each other's rows), then load what sending
        them needs."""
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.webhook_timeout_seconds + 30)
        due = (
            select(_DELIVERIES.c.id)
            .where(_DELIVERIES.c.state == "pending", _DELIVERIES.c.next_attempt_at <= now,
                   or_(_DELIVERIES.c.lease_until.is_(None), _DELIVERIES.c.lease_until < now))
            .order_by(_DELIVERIES.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)  # PostgreSQL; SQLite has one writer anyway
        )
        claim = (update(_DELIVERIES).where(_DELIVERIES.c.id.in_(due.scalar_subquery()))
                 .values(lease_until=lease).returning(_DELIVERIES.c.id))
        ids = await self.writer.run(lambda session: list(session.connection().execute(claim).scalars()))
        if not ids:
            return []
        return await asyncio.to_thread(self._load, ids, now)

    def _load(self, ids: list[str], now: datetime) -> list[Claimed]:
        query = (
            select(_DELIVERIES.c.id, _DELIVERIES.c.agency_id, _DELIVERIES.c.event_type, _DELIVERIES.c.attempts,
                   _DELIVERIES.c.schedule_step, _NOTIFICATIONS.c.id.label("notification_id"),
                   _NOTIFICATIONS.c.event_id, _NOTIFICATIONS.c.event_source, _NOTIFICATIONS.c.subject,
                   _NOTIFICATIONS.c.recipient, _NOTIFICATIONS.c.payload, _NOTIFICATIONS.c.event_time,
                   _ENDPOINTS.c.url, _ENDPOINTS.c.enabled, _ENDPOINTS.c.secret, _ENDPOINTS.c.previous_secrets)
            .join(_NOTIFICATIONS, _NOTIFICATIONS.c.id == _DELIVERIES.c.notification_id)
            .outerjoin(_ENDPOINTS, _ENDPOINTS.c.agency_id == _DELIVERIES.c.agency_id)
            .where(_DELIVERIES.c.id.in_(ids))
        )
        with self.read_engine.connect() as connection:
            return [_claimed(row, now) for row in connection.execute(query)]

    def _next_due(self) -> datetime | None:
        now = utcnow()
        query = (select(_DELIVERIES.c.next_attempt_at)
                 .where(_DELIVERIES.c.state == "pending",
                        or_(_DELIVERIES.c.lease_until.is_(None), _DELIVERIES.c.lease_until < now))
                 .order_by(_DELIVERIES.c.next_attempt_at).limit(1))
        with self.read_engine.connect() as connection:
            next_due = connection.execute(query).scalar()
        return as_utc(next_due) if next_due else None

    async def _attempt(self, claimed: Claimed) -> None:
        try:
            outcome = await self._send(claimed)
            await self.writer.run(lambda session: self._record(session, outcome))
        except Exception:
            # Not recorded: the lease runs out and the delivery is tried again.
            log.exception("the outcome of delivery %s could not be recorded", claimed.delivery_id)
        finally:
            self._in_flight.pop(claimed.delivery_id, None)
            self._slot_freed.set()

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
            self.guard.check_literal(claimed.url)
        except UnsafeWebhookUrl as error:
            return ended("refused_address", error=error.detail[:500])
        signed = sign(delivery_id=claimed.delivery_id, body=claimed.body, secrets_in_use=list(claimed.secrets_in_use))
        try:
            # Redirects are not followed: the checked URL is the one called.
            async with self._client.post(claimed.url, data=signed.body, headers=signed.headers,
                                         allow_redirects=False) as response:
                status = response.status
                retry_after_header = response.headers.get("retry-after")
                await _drain(response)
        except TimeoutError:
            return ended("failed", error=f"timeout after {self.settings.webhook_timeout_seconds:g} s")
        except aiohttp.ClientConnectorError as error:
            if isinstance(error.os_error, RefusedAddress):
                return ended("refused_address", error=str(error.os_error)[:500])
            return ended("failed", error=f"{type(error).__name__}: {error}"[:500])
        except Exception as error:  # a bad URL, a broken answer: a failure like any other, never a lost attempt
            return ended("failed", error=f"{type(error).__name__}: {error}"[:500])
        if 200 <= status < 300:
            return ended("delivered", status)
        if status == 410:
            return ended("endpoint_gone", status, "the receiver answered 410 Gone")
        retry_after = None
        if status in (429, 503):
            retry_after = parse_retry_after(retry_after_header, now=datetime.now(UTC))
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
        connection = session.connection()
        # Only if still ours: a manual retry or another replica may have moved it.
        updated = connection.execute(
            update(_DELIVERIES).where(_DELIVERIES.c.id == claimed.delivery_id, _DELIVERIES.c.state == "pending",
                                      _DELIVERIES.c.attempts == claimed.attempts).values(**values)
        ).rowcount
        if not updated:
            log.warning("delivery %s changed while it was being attempted; outcome %s not recorded",
                        claimed.delivery_id, result.outcome)
            return
        connection.execute(_INSERT_ATTEMPT, {
            "delivery_id": claimed.delivery_id, "attempt": attempt, "outcome": result.outcome,
            "status_code": result.status_code, "error": result.error, "duration_ms": result.duration_ms,
            "attempted_at": now})
        if result.outcome == "endpoint_gone":
            # Only the URL that answered 410: not one the agency registered meanwhile.
            connection.execute(update(_ENDPOINTS).where(_ENDPOINTS.c.agency_id == claimed.agency_id,
                                                        _ENDPOINTS.c.url == claimed.url)
                               .values(enabled=False, disabled_reason="the receiver answered 410 Gone",
                                       updated_at=now))
        stage_new_event(session, topic=NOTIFICATIONS_DELIVERIES.name, key=claimed.delivery_id,
                        type=DELIVERY_ATTEMPTED, source=NOTIFICATIONS_SOURCE, subject=claimed.delivery_id,
                        data=DeliveryAttempted(
                            delivery_id=claimed.delivery_id, notification_id=claimed.notification_id,
                            agency_id=claimed.agency_id, event_type=claimed.event_type, attempt=attempt,
                            outcome=result.outcome, status_code=result.status_code, error=result.error,
                            duration_ms=result.duration_ms, attempted_at=now, next_attempt_at=next_attempt_at,
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


_DELIVERIES = DeliveryRow.__table__
_NOTIFICATIONS = NotificationRow.__table__
_ENDPOINTS = WebhookEndpointRow.__table__
_INSERT_ATTEMPT = insert(DeliveryAttemptRow.__table__)


async def _drain(response: aiohttp.ClientResponse, limit: int = 65536) -> None:
    """Read a small answer so its connection can be reused; a larger one is
    cut off (the connection is then closed), as nobody reads it."""
    received = 0
    while received <= limit and (chunk := await response.content.read(limit)):
        received += len(chunk)


def _claimed(row, now: datetime) -> Claimed:
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
        body=body, url=row.url if usable else None, secrets_in_use=secrets_in_use,
    )
