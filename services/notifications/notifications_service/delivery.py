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
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
from sqlalchemy import bindparam, insert, or_, select, update
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
from shared.outbox import NewEvent, stage_new_events
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
    lease_until: datetime | None = None  # this dispatcher's claim, as written


@dataclass(frozen=True)
class Outcome:
    claimed: Claimed
    outcome: str  # delivered | failed | endpoint_gone | endpoint_disabled | refused_address
    status_code: int | None
    error: str | None
    duration_ms: float
    attempted_at: datetime
    retry_after: float | None = None


def webhook_client(settings: NotificationsSettings, guard: AddressGuard) -> aiohttp.ClientSession:
    """The dispatcher's HTTP client. aiohttp, not httpx: at 64 concurrent
    requests httpx managed about 260 POSTs/s here, aiohttp about 10,000
    (BENCHMARKS.md). Its total timeout bounds a whole attempt, however slowly
    the receiver trickles its answer; its resolver refuses private addresses
    unless they are allowed, at connection time (no DNS rebinding)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=settings.delivery_concurrency, resolver=guard.resolver()),
        timeout=aiohttp.ClientTimeout(total=settings.webhook_timeout_seconds),
        headers={"user-agent": USER_AGENT}, auto_decompress=False,
    )


async def send_attempt(client: aiohttp.ClientSession, guard: AddressGuard, claimed: Claimed) -> Outcome:
    """One attempt, within the client's timeout; whatever happens, an outcome
    (never an exception)."""
    started = time.perf_counter()
    attempted_at = utcnow()

    def ended(outcome: str, status: int | None = None, error: str | None = None,
              retry_after: float | None = None) -> Outcome:
        return Outcome(claimed, outcome, status, error, round((time.perf_counter() - started) * 1000, 2),
                       attempted_at, retry_after)

    if claimed.url is None:
        return ended("endpoint_disabled", error="the agency has no enabled webhook endpoint")
    try:
        guard.check_literal(claimed.url)
    except UnsafeWebhookUrl as error:
        return ended("refused_address", error=error.detail[:500])
    signed = sign(delivery_id=claimed.delivery_id, body=claimed.body, secrets_in_use=list(claimed.secrets_in_use))
    try:
        # Redirects are not followed: the checked URL is the one called.
        async with client.post(claimed.url, data=signed.body, headers=signed.headers,
                               allow_redirects=False) as response:
            status = response.status
            retry_after_header = response.headers.get("retry-after")
            await _drain(response)
    except TimeoutError:
        return ended("failed", error=f"timeout after {client.timeout.total:g} s")
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
        self._in_flight: dict[str, asyncio.Task] = {}  # claimed, until recorded
        self._waiting: dict[str, Claimed] = {}  # claimed, waiting for a send slot
        # Claimed and not yet sent (waiting for a slot or being sent), by agency.
        self._unsent_by_agency: Counter[str] = Counter()
        # Agencies whose latest attempt failed or was slow (and when): they get
        # a few send slots at a time, so that one broken receiver cannot hold
        # them all. Forgotten after a quick success, or STRUGGLE_MEMORY.
        self._struggling: dict[str, float] = {}
        self._send_slots = asyncio.Semaphore(settings.delivery_concurrency)
        self._client: aiohttp.ClientSession | None = None
        self._stopping = False
        self._unrecorded: list[tuple[Outcome, asyncio.Future]] = []
        self._recording: asyncio.Task | None = None

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = webhook_client(self.settings, self.guard)
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        """Stop claiming; let attempts in flight finish and be recorded (each
        is bounded by the timeout), so a restart does not send them again.
        Claimed deliveries not yet sent are not sent: their leases are
        released, so they are due again at once after a restart."""
        self._stopping = True
        grace = self.settings.webhook_timeout_seconds + 5
        if self._task is not None:
            # The loop ends at its next wait: a claim in progress is finished,
            # not cut off (its rows would stay leased, unsent, a whole lease).
            self._wakeup.set()
            self._slot_freed.set()
            _done, pending = await asyncio.wait([self._task], timeout=grace)
            if pending:
                await cancel_and_wait(self._task)
        waiting, self._waiting = list(self._waiting.values()), {}
        if waiting:
            await self._release(waiting)
        if self._in_flight:
            _done, late = await asyncio.wait(list(self._in_flight.values()), timeout=grace)
            for task in late:  # not recorded: their leases run out and they are sent again
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._recording is not None and not self._recording.done():
            _done, pending = await asyncio.wait([self._recording], timeout=5)
            if pending:
                await cancel_and_wait(self._recording)
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
        # Claim up to one round ahead of the sends, so that a send slot never
        # waits for a claim to commit; a delivery waits at most one round of
        # attempts for its slot, which the lease allows for.
        concurrency = self.settings.delivery_concurrency
        most_unsent = 2 * concurrency
        while not self._stopping:
            unsent = self._unsent_by_agency.total()
            free = most_unsent - unsent
            # While some claimed deliveries still wait for a slot, claim in
            # handfuls rather than one by one.
            if free <= 0 or (free < concurrency // 2 and unsent > concurrency):
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            self._wakeup.clear()
            rooms = self._struggling_rooms()
            try:
                claimed = await self._claim(min(free, self.settings.delivery_batch_size), rooms)
            except Exception:
                log.exception("claiming due deliveries failed; trying again")
                await asyncio.sleep(self.settings.delivery_poll_interval_seconds)
                continue
            for delivery in claimed:
                self._unsent_by_agency[delivery.agency_id] += 1
                self._waiting[delivery.delivery_id] = delivery
                self._in_flight[delivery.delivery_id] = asyncio.create_task(
                    self._attempt(delivery), name=f"delivery-{delivery.delivery_id}")
            if claimed:
                continue  # more may be due already
            wait = self.settings.delivery_poll_interval_seconds
            # (With struggling agencies held back, what is due may be theirs:
            # wait for one of their sends to end, which wakes this loop.)
            next_due = None if rooms else await asyncio.to_thread(self._next_due)
            if next_due is not None:
                wait = min(wait, max((next_due - datetime.now(UTC)).total_seconds(), 0.01))
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=wait)
            except TimeoutError:
                pass

    def _struggling_rooms(self) -> dict[str, int]:
        """Struggling agencies and how many more of their deliveries may be
        claimed now."""
        forget_before = time.monotonic() - STRUGGLE_MEMORY_SECONDS
        for agency, since in list(self._struggling.items()):
            if since < forget_before and not self._unsent_by_agency[agency]:
                del self._struggling[agency]
        cap = self.settings.delivery_concurrency_struggling_endpoint
        return {agency: max(cap - self._unsent_by_agency[agency], 0) for agency in sorted(self._struggling)}

    async def _release(self, claimed: list[Claimed]) -> None:
        """Give up the leases of claimed deliveries that will not be sent now,
        only where the lease is still ours (after it ran out, another
        dispatcher may hold one)."""
        params = [{"b_id": delivery.delivery_id, "b_lease": delivery.lease_until} for delivery in claimed]
        try:
            await self.writer.run(lambda session: session.connection().execute(_RELEASE, params))
        except Exception:
            log.warning("could not release %d unsent deliveries; their leases will run out", len(params),
                        exc_info=True)

    async def _claim(self, limit: int, struggling_rooms: dict[str, int]) -> list[Claimed]:
        """Lease up to `limit` due deliveries, of each struggling agency at
        most its room (one UPDATE ... RETURNING for the others, one per
        struggling agency with room; on PostgreSQL replicas skip each other's
        rows), then load what sending them needs, oldest first."""
        now = utcnow()
        lease = now + timedelta(
            seconds=2 * self.settings.webhook_timeout_seconds + self.settings.webhook_lease_margin_seconds)

        # Built here, not in the writer's thread: the writer serves everyone.
        others = _claim_statement(now, lease, limit, excluding=list(struggling_rooms))

        def claim(session: Session) -> list[str]:
            connection = session.connection()
            ids = list(connection.execute(others).scalars())
            for agency, room in struggling_rooms.items():
                room = min(room, limit - len(ids))
                if room > 0:
                    ids += connection.execute(_claim_statement(now, lease, room, agency=agency)).scalars()
            return ids

        ids = await self.writer.run(claim)
        if not ids:
            return []
        return await asyncio.to_thread(self._load, ids, now, lease)

    def _load(self, ids: list[str], now: datetime, lease: datetime) -> list[Claimed]:
        query = (
            select(_DELIVERIES.c.id, _DELIVERIES.c.agency_id, _DELIVERIES.c.event_type, _DELIVERIES.c.attempts,
                   _DELIVERIES.c.schedule_step, _NOTIFICATIONS.c.id.label("notification_id"),
                   _NOTIFICATIONS.c.event_id, _NOTIFICATIONS.c.event_source, _NOTIFICATIONS.c.subject,
                   _NOTIFICATIONS.c.recipient, _NOTIFICATIONS.c.payload, _NOTIFICATIONS.c.event_time,
                   _ENDPOINTS.c.url, _ENDPOINTS.c.enabled, _ENDPOINTS.c.secret, _ENDPOINTS.c.previous_secrets)
            .join(_NOTIFICATIONS, _NOTIFICATIONS.c.id == _DELIVERIES.c.notification_id)
            .outerjoin(_ENDPOINTS, _ENDPOINTS.c.agency_id == _DELIVERIES.c.agency_id)
            .where(_DELIVERIES.c.id.in_(ids))
            .order_by(_DELIVERIES.c.next_attempt_at, _DELIVERIES.c.created_at)  # sent in this order
        )
        with self.read_engine.connect() as connection:
            return [_claimed(row, now, lease) for row in connection.execute(query)]

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
        # The slot is for sending; recording waits for a commit, and holding
        # the slot meanwhile would leave the receiver idle.
        try:
            try:
                async with self._send_slots:
                    self._waiting.pop(claimed.delivery_id, None)
                    if self._stopping:
                        return  # not sent; stop() releases its lease
                    outcome = await send_attempt(self._client, self.guard, claimed)
            finally:
                self._unsent_by_agency[claimed.agency_id] -= 1
                if not self._unsent_by_agency[claimed.agency_id]:
                    del self._unsent_by_agency[claimed.agency_id]
                self._slot_freed.set()
            if claimed.agency_id in self._struggling:
                self._wakeup.set()  # more of its deliveries may be claimed now
            self._note_health(claimed.agency_id, outcome)
            await self._record_soon(outcome)
        except Exception:
            # Not recorded: the lease runs out and the delivery is tried again.
            log.exception("the outcome of delivery %s could not be recorded", claimed.delivery_id)
        finally:
            self._in_flight.pop(claimed.delivery_id, None)

    def _note_health(self, agency_id: str, outcome: Outcome) -> None:
        """Failures and slow answers mark a receiver as struggling; a quick
        success clears it. (Other outcomes never reached the receiver.)"""
        slow = outcome.duration_ms > self.settings.webhook_timeout_seconds * 1000 / 2
        if outcome.outcome == "failed" or (outcome.outcome == "delivered" and slow):
            self._struggling[agency_id] = time.monotonic()
        elif outcome.outcome == "delivered":
            self._struggling.pop(agency_id, None)

    async def _record_soon(self, outcome: "Outcome") -> None:
        """Outcomes that end together are recorded together: one statement per
        kind of row for the lot, instead of several per outcome."""
        future = asyncio.get_running_loop().create_future()
        self._unrecorded.append((outcome, future))
        if self._recording is None or self._recording.done():
            self._recording = asyncio.create_task(self._record_pending(), name="record-outcomes")
        await future

    async def _record_pending(self) -> None:
        while self._unrecorded:
            batch, self._unrecorded = self._unrecorded, []
            try:
                await self.writer.run(lambda session: self._record(session, [outcome for outcome, _ in batch]))
            except Exception as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    # -- recording (inside the group commit) -------------------------------------------
    def _record(self, session: Session, results: list["Outcome"]) -> None:
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
            values, next_attempt_at = self._next_state(result)
            updates.append(values)
            attempts.append({
                "delivery_id": claimed.delivery_id, "attempt": values["b_attempts"], "outcome": result.outcome,
                "status_code": result.status_code, "error": result.error, "duration_ms": result.duration_ms,
                "attempted_at": result.attempted_at})
            events.append(NewEvent(
                topic=NOTIFICATIONS_DELIVERIES.name, key=claimed.delivery_id, type=DELIVERY_ATTEMPTED,
                source=NOTIFICATIONS_SOURCE, subject=claimed.delivery_id, data=DeliveryAttempted(
                    delivery_id=claimed.delivery_id, notification_id=claimed.notification_id,
                    agency_id=claimed.agency_id, event_type=claimed.event_type, attempt=values["b_attempts"],
                    outcome=result.outcome, status_code=result.status_code, error=result.error,
                    duration_ms=result.duration_ms, attempted_at=result.attempted_at,
                    next_attempt_at=next_attempt_at).model_dump(mode="json")))
            dead = values["b_state"] == "dead"
            if dead:
                events.append(NewEvent(
                    topic=NOTIFICATIONS_DEAD_LETTER.name, key=claimed.delivery_id, type=DELIVERY_DEAD,
                    source=NOTIFICATIONS_SOURCE, subject=claimed.delivery_id, data=DeliveryDead(
                        delivery_id=claimed.delivery_id, notification_id=claimed.notification_id,
                        agency_id=claimed.agency_id, event_type=claimed.event_type, attempts=values["b_attempts"],
                        last_status_code=result.status_code, last_error=result.error,
                        dead_at=result.attempted_at).model_dump(mode="json")))
            if result.outcome == "endpoint_gone":
                gone.append({"b_agency_id": claimed.agency_id, "b_url": claimed.url,
                             "b_updated_at": result.attempted_at})
            latency = ((datetime.now(UTC) - claimed.event_time).total_seconds()
                       if result.outcome == "delivered" else None)
            counts.append((result.outcome, latency, dead))
        if not updates:
            return
        connection.execute(_UPDATE_DELIVERY, updates)
        connection.execute(_INSERT_ATTEMPT, attempts)
        if gone:
            # Only the URL that answered 410: not one the agency registered meanwhile.
            connection.execute(_DISABLE_ENDPOINT, gone)
        stage_new_events(session, events)

        def count() -> None:
            for outcome, latency, dead in counts:
                metrics.DELIVERIES.labels(outcome).inc()
                if latency is not None:
                    metrics.DELIVERY_LATENCY.observe(max(latency, 0.0))
                if dead:
                    metrics.DEAD.inc()

        call_after_commit(session, count)

    def _next_state(self, result: "Outcome") -> tuple[dict, datetime | None]:
        """The delivery's new columns (as _UPDATE_DELIVERY's parameters) and
        when its next attempt is due."""
        claimed, now = result.claimed, result.attempted_at
        failures = claimed.schedule_step + 1
        values = {"b_id": claimed.delivery_id, "b_claimed_attempts": claimed.attempts,
                  "b_attempts": claimed.attempts + 1, "b_last_status_code": result.status_code,
                  "b_last_error": result.error, "b_last_attempt_at": now, "b_state": "pending",
                  "b_schedule_step": failures, "b_next_attempt_at": None, "b_delivered_at": None, "b_dead_at": None}
        if result.outcome == "delivered":
            return values | {"b_state": "delivered", "b_delivered_at": now,
                             "b_schedule_step": claimed.schedule_step}, None
        if result.outcome in ("endpoint_gone", "endpoint_disabled"):
            return values | {"b_state": "dead", "b_dead_at": now}, None
        delay = retry_delay(self.settings.webhook_retry_schedule_seconds, failures,
                            jitter=self.settings.webhook_retry_jitter, rng=self.rng)
        if delay is not None and result.retry_after is not None:
            delay = min(max(delay, result.retry_after), self.settings.webhook_retry_after_max_seconds)
        if delay is None:
            return values | {"b_state": "dead", "b_dead_at": now}, None
        next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay)
        return values | {"b_next_attempt_at": next_attempt_at}, next_attempt_at


_DELIVERIES = DeliveryRow.__table__
_NOTIFICATIONS = NotificationRow.__table__
_ENDPOINTS = WebhookEndpointRow.__table__
_INSERT_ATTEMPT = insert(DeliveryAttemptRow.__table__)
# Statements built once: recording runs for every attempt.
_CURRENT = select(_DELIVERIES.c.id, _DELIVERIES.c.attempts).where(
    _DELIVERIES.c.id.in_(bindparam("ids", expanding=True)), _DELIVERIES.c.state == "pending")
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
# A receiver that failed is held to a few slots until it answers quickly, or
# for this long after its last failure once none of its deliveries is claimed.
STRUGGLE_MEMORY_SECONDS = 600.0


def _claim_statement(now: datetime, lease: datetime, limit: int, *, excluding: list[str] = (),
                     agency: str | None = None):
    """Lease up to `limit` due deliveries: of one agency, or of any but the
    `excluding` ones."""
    conditions = [_DELIVERIES.c.state == "pending", _DELIVERIES.c.next_attempt_at <= now,
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


_DISABLE_ENDPOINT = (
    update(_ENDPOINTS)
    .where(_ENDPOINTS.c.agency_id == bindparam("b_agency_id"), _ENDPOINTS.c.url == bindparam("b_url"))
    .values(enabled=False, disabled_reason="the receiver answered 410 Gone", updated_at=bindparam("b_updated_at"))
)


async def _drain(response: aiohttp.ClientResponse, limit: int = 65536) -> None:
    """Read a small answer so its connection can be reused; a larger one is
    cut off (the connection is then closed), as nobody reads it."""
    received = 0
    while received <= limit and (chunk := await response.content.read(limit)):
        received += len(chunk)


def _claimed(row, now: datetime, lease: datetime) -> Claimed:
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
    )
