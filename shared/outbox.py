"""Transactional outbox: events commit with the state change that caused them.

`stage_events` adds rows to the caller's session. When that session commits,
the relay of the same engine is woken at once; it publishes pending rows in id
order with an idempotent `acks=all` producer and marks them published. A crash
between send and mark can only repeat an event (consumers dedupe on its id);
it can never lose one, because a row is marked only after the broker acked it.
A row the broker refuses again and again is set aside (see `OutboxRelay`).
"""

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnsupportedForMessageFormatError,
)
from sqlalchemy import bindparam, func, insert, update
from sqlalchemy import event as sa_event
from sqlalchemy import select as core_select
from sqlalchemy.engine import Connection, Engine, Row
from sqlmodel import Session, col, select, text

from shared import metrics
from shared.db import is_sqlite, table_of
from shared.events import envelope_json, record_from_envelope
from shared.group_commit import GroupCommitWriter
from shared.logging import event_id_var
from shared.messaging_models import OutboxMessage, as_utc
from shared.retry import Backoff
from shared.tracing import current_trace_headers
from shared.workers import SupervisedWorker

log = logging.getLogger(__name__)

_PENDING_FLAG = "outbox_pending"
# Wake callbacks per engine, so a commit wakes only the relay of its database.
_wakers: "weakref.WeakKeyDictionary[Engine, list[Callable[[], None]]]" = weakref.WeakKeyDictionary()
# Any constant works; it only has to be the same for every relay of one database.
_RELAY_LOCK_ID = 4_206_2006
DEFAULT_MAX_ATTEMPTS = 10

# Failures that belong to the row itself: sending it again cannot succeed.
# Any other Kafka error (broker down, timeouts, leader changes, a closed
# producer) is the broker's state, not the row's, and is retried for as long
# as it lasts: an outage must never set rows aside.
_ROW_REFUSALS = (
    MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError, InvalidTopicError,
    CorruptRecordException, UnsupportedForMessageFormatError,
)


def refuses_the_row(error: BaseException) -> bool:
    if isinstance(error, KafkaError):
        return isinstance(error, _ROW_REFUSALS)
    # Raised while reading, building or serialising this row's record.
    return isinstance(error, Exception)


_OUTBOX = table_of(OutboxMessage)
_INSERT_OUTBOX = insert(_OUTBOX)
_PENDING = (
    core_select(_OUTBOX.c.id, _OUTBOX.c.event_id, _OUTBOX.c.topic, _OUTBOX.c.message_key, _OUTBOX.c.event_type,
           _OUTBOX.c.envelope, _OUTBOX.c.attempts, _OUTBOX.c.created_at)
    .where(_OUTBOX.c.published_at.is_(None), _OUTBOX.c.set_aside_at.is_(None))
    .order_by(_OUTBOX.c.id)
    .limit(bindparam("limit"))
)


@dataclass(frozen=True)
class NewEvent:
    topic: str
    key: str
    type: str
    source: str
    subject: str | None
    data: dict | None
    # Now, unless the caller's change has its own moment (the catalog's sync).
    time: datetime | None = None
    # The W3C trace context to carry; by default the current span's (shared.tracing).
    traceparent: str | None = None
    tracestate: str | None = None


def stage_events(session: Session, events: Sequence[NewEvent]) -> list[str]:
    """Queue `events` for publishing when (and only if) `session` commits,
    with one statement; returns their ids. Each carries the trace context it
    names, else the current one (the request's or the handled record's)."""
    if not events:
        return []
    now = datetime.now(UTC)
    current_traceparent, current_tracestate = current_trace_headers()
    rows: list[dict[str, Any]] = []
    for event in events:
        traceparent, tracestate = (
            (event.traceparent, event.tracestate) if event.traceparent else (current_traceparent, current_tracestate))
        event_id, envelope = envelope_json(type=event.type, source=event.source, subject=event.subject,
                                           data=event.data, time=event.time, traceparent=traceparent,
                                           tracestate=tracestate)
        rows.append({"event_id": event_id, "topic": event.topic, "message_key": event.key,
                     "event_type": event.type, "envelope": envelope, "created_at": now, "attempts": 0})
    # A plain INSERT on the session's connection, not ORM objects: this is on
    # every write path. One event, the usual case, is not an executemany.
    session.connection().execute(_INSERT_OUTBOX, rows[0] if len(rows) == 1 else rows)
    session.info[_PENDING_FLAG] = True
    return [row["event_id"] for row in rows]


@sa_event.listens_for(Session, "after_commit")
def _wake_relay_after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint was released; the rows are not committed yet
    if not session.info.pop(_PENDING_FLAG, False):
        return
    bind = session.get_bind()
    engine = bind.engine if isinstance(bind, Connection) else bind
    for wake in _wakers.get(engine, ()):
        wake()


@sa_event.listens_for(Session, "after_rollback")
def _forget_pending_after_rollback(session: Session) -> None:
    if session.in_nested_transaction():
        return  # only a savepoint: rows staged before it are still pending
    session.info.pop(_PENDING_FLAG, None)


def outbox_backlog(session: Session) -> tuple[int, float]:
    """Pending rows and the age in seconds of the oldest one (0 when empty).
    Set-aside rows are not pending: `outbox_set_aside_count` counts them."""
    count, oldest = session.exec(
        select(func.count(), func.min(OutboxMessage.created_at))
        .where(col(OutboxMessage.published_at).is_(None), col(OutboxMessage.set_aside_at).is_(None))
    ).one()
    age = (datetime.now(UTC) - as_utc(oldest)).total_seconds() if oldest else 0.0
    return int(count), max(age, 0.0)


def outbox_set_aside_count(session: Session) -> int:
    return int(session.exec(
        select(func.count()).where(col(OutboxMessage.set_aside_at).is_not(None))
    ).one())


def set_aside_rows(session: Session) -> list[OutboxMessage]:
    """Rows the relay gave up on, oldest first; `last_error` holds the reason."""
    return list(session.exec(
        select(OutboxMessage).where(col(OutboxMessage.set_aside_at).is_not(None)).order_by(col(OutboxMessage.id))
    ).all())


def put_back_to_pending(session: Session, row_id: int) -> bool:
    """Make a set-aside row pending again, with a fresh count of attempts.
    False when there is no such set-aside row. The caller commits."""
    result = session.exec(
        update(OutboxMessage)
        .where(col(OutboxMessage.id) == row_id, col(OutboxMessage.set_aside_at).is_not(None))
        .values(set_aside_at=None, attempts=0)
    )
    session.info[_PENDING_FLAG] = True
    return result.rowcount == 1


class OutboxRelay:
    """Publishes the outbox of one database, as the supervised worker
    "outbox-relay": if its loop ever ends with an error it is restarted.

    A row the broker refuses (too large, an invalid topic, an envelope that
    does not parse) fails its round and is retried with a capped backoff.
    When a refusal is its `max_attempts`-th failed attempt (or a later one),
    it is set aside: no longer pending, its reason kept in `last_error`,
    counted in `caj_outbox_set_aside_total` and listed by `caj outbox failed`.
    Per-key order: the rows behind it, those with the same key included, are
    published without it, so a consumer may see later events of that key and
    never this one (or, if an operator puts it back, see it after them): one
    refused row must not hold back every later event of the service. Failures
    that are the broker's state (down, timing out) are retried for as long as
    they last and never set a row aside."""

    def __init__(
        self,
        *,
        engine: Engine,
        producer: AIOKafkaProducer,
        poll_interval: float = 1.0,
        batch_size: int = 500,
        writer: "GroupCommitWriter | None" = None,
        read_engine: Engine | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff: Backoff | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.engine = engine
        # Loading pending rows is a read: on SQLite it must not take the write
        # lock (BEGIN IMMEDIATE) that the service's writers are queuing for.
        self.read_engine = read_engine or engine
        # With a writer, marking rows joins the service's group commit instead
        # of competing with it for SQLite's single write lock.
        self.writer = writer
        self.producer = producer
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        # Between failed rounds; capped, so however long the broker is down
        # the relay goes on retrying every few seconds.
        self.backoff = backoff or Backoff(first=0.2, cap=5.0)
        # Made here, not in start(): readiness may look at it before the
        # relay starts (Kafka not connected yet).
        self.worker = SupervisedWorker("outbox-relay", self.run)
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._leader_connection: Connection | None = None
        self._leader_file: IO | None = None
        # Leadership is taken in a worker thread that a cancelled task does not
        # stop: the lock and flag keep a late acquisition from outliving stop().
        self._leadership_lock = threading.Lock()
        self._stopped = False
        # Rows the broker acknowledged, being marked published while the next
        # round loads and sends: one batch at a time, its rows left out of
        # loads until its marking is seen to end, so they do not go out twice.
        self._marking: asyncio.Task | None = None
        self._marking_ids: set[int] = set()

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        _wakers.setdefault(self.engine, []).append(self.wake)
        self.worker.start()

    async def stop(self) -> None:
        self._stopped = True
        wakers = _wakers.get(self.engine, [])
        if self.wake in wakers:
            wakers.remove(self.wake)
        await self.worker.stop()
        with contextlib.suppress(Exception):  # unmarked rows are only published again
            await self._finish_marking()
        await asyncio.to_thread(self._release_leadership)

    @property
    def running(self) -> bool:
        return self.worker.running

    def wake(self) -> None:
        """Safe to call from any thread (commits happen in FastAPI's thread pool)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wakeup.set)

    async def run(self) -> None:
        while True:
            self._wakeup.clear()
            try:
                published = await self.publish_pending()
            except Exception:
                delay = self.backoff.next_delay()
                log.warning("outbox relay round failed; retrying in %.1fs", delay, exc_info=True)
                await asyncio.sleep(delay)
                continue
            self.backoff.reset()
            if published >= self.batch_size:
                continue  # more rows are probably waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.poll_interval)

    # -- one round -----------------------------------------------------------
    async def publish_pending(self) -> int:
        """Publish one batch of pending rows; return how many were published.
        The batch is marked published in the background while the next round
        loads and sends (that round waits for it once its own rows are sent),
        so a row committed meanwhile goes out at once, not after that commit.
        `stop()` waits for the last marking."""
        if self._marking is not None and self._marking.done():
            await self._finish_marking()  # a failed marking fails this round, before anything is sent
        if not await asyncio.to_thread(self._hold_leadership):
            return 0
        # Taken before loading: a row whose marking ends during the load may
        # still be read as pending, and must not be sent again.
        being_marked = set(self._marking_ids)
        rows = await asyncio.to_thread(self._load_pending, self.batch_size + len(being_marked))
        rows = [row for row in rows if row.id not in being_marked][:self.batch_size]
        if not rows:
            return 0
        # Send the batch, then keep the longest prefix the broker acknowledged:
        # those rows are marked published, the first failed row records its
        # error, and nothing after it counts as sent, so per-key order holds
        # and a failing row never makes the rows before it go out again.
        outcomes: list[asyncio.Future | Exception] = []
        for row in rows:
            try:
                record = record_from_envelope(row.envelope, key=row.message_key)
                outcomes.append(
                    await self.producer.send(row.topic, value=record.value, key=record.key, headers=record.headers)
                )
            except Exception as error:  # refused before sending: bad envelope, record too large, no topic
                outcomes.append(error)
                break
        results = await asyncio.gather(
            *(outcome for outcome in outcomes if isinstance(outcome, asyncio.Future)), return_exceptions=True
        )
        settled = iter(results)
        sent: list[Row] = []
        failure: tuple[Row, BaseException] | None = None
        for row, outcome in zip(rows, outcomes, strict=False):  # outcomes stop at the first refused row
            result = outcome if isinstance(outcome, BaseException) else next(settled)
            if isinstance(result, BaseException):
                failure = (row, result)
                break
            sent.append(row)
        acknowledged = datetime.now(UTC)
        to_broker = metrics.EVENT_HOP_LATENCY.labels(metrics.HOP_OUTBOX_PUBLISH)
        for row in sent:
            metrics.KAFKA_PRODUCED.labels(topic=row.topic, outcome="ok").inc()
            to_broker.observe(max((acknowledged - as_utc(row.created_at)).total_seconds(), 0.0))
            token = event_id_var.set(row.event_id)
            log.debug("published %s to %s", row.event_type, row.topic)
            event_id_var.reset(token)
        await self._finish_marking()
        ids = [row.id for row in sent]
        if ids:
            self._marking_ids.update(ids)
            self._marking = asyncio.create_task(self._mark(ids), name="outbox-mark-published")
        if failure is not None:
            row, refusal = failure
            metrics.KAFKA_PRODUCED.labels(topic=row.topic, outcome="error").inc()
            # Only the leader publishes, so the loaded count is the row's own.
            set_aside = refuses_the_row(refusal) and row.attempts + 1 >= self.max_attempts
            await asyncio.to_thread(self._record_failure, row.id, repr(refusal), set_aside)
            if not set_aside:
                raise RuntimeError(
                    f"outbox row {row.id} ({row.event_type}) was not published: {refusal!r}"
                ) from refusal
            metrics.OUTBOX_SET_ASIDE.labels(topic=row.topic).inc()
            log.error("outbox row %s (%s to %s) set aside after %d refusals: %r",
                      row.id, row.event_type, row.topic, row.attempts + 1, refusal)
            self._wakeup.set()  # the rows behind it go out now, not at the next poll
        return len(sent)

    def _load_pending(self, limit: int) -> list[Row]:
        # Plain rows, not ORM objects: every event the service emits passes here.
        with self.read_engine.connect() as connection:
            return list(connection.execute(_PENDING, {"limit": limit}))

    async def _mark(self, ids: list[int]) -> None:
        if self.writer is not None:
            await self.writer.run(lambda session: self._mark_in(session, ids))
        else:
            await asyncio.to_thread(self._mark_published, ids)

    async def _finish_marking(self) -> None:
        """Wait for the batch being marked; raise if marking it failed."""
        marking = self._marking
        if marking is None:
            return
        try:
            # Shielded: a relay stopped meanwhile still lets the mark commit
            # (and stop() waits for it).
            await asyncio.shield(marking)
        finally:
            if marking.done() and self._marking is marking:
                # Marked, or still pending after a failure (the error is
                # raised here, and the rows are loaded and sent again).
                self._marking = None
                self._marking_ids.clear()

    def _mark_published(self, ids: list[int]) -> None:
        with Session(self.engine) as session:
            self._mark_in(session, ids)
            session.commit()

    @staticmethod
    def _mark_in(session: Session, ids: list[int]) -> None:
        session.exec(
            update(OutboxMessage)
            .where(col(OutboxMessage.id).in_(ids))
            .values(published_at=datetime.now(UTC), attempts=OutboxMessage.attempts + 1, last_error=None)
        )

    def _record_failure(self, row_id: int, error: str, set_aside: bool) -> None:
        values = {"attempts": OutboxMessage.attempts + 1, "last_error": error[:2000]}
        if set_aside:
            values["set_aside_at"] = datetime.now(UTC)
        with Session(self.engine) as session:
            session.exec(update(OutboxMessage).where(col(OutboxMessage.id) == row_id).values(**values))
            session.commit()

    # -- one publisher per database -----------------------------------------
    def _hold_leadership(self) -> bool:
        """Several replicas may share one outbox; one of them publishes, so
        per-key order holds and nothing goes out twice. On PostgreSQL a
        session advisory lock elects it; on SQLite, whose replicas share a
        machine, an exclusive lock on a file beside the database. Either lock
        goes with its holder if the process dies."""
        with self._leadership_lock:
            if self._stopped:
                return False
            if is_sqlite(str(self.engine.url)):
                return self._hold_file_leadership_locked()
            return self._hold_leadership_locked()

    def _hold_file_leadership_locked(self) -> bool:
        database = self.engine.url.database
        if not database or database == ":memory:":
            return True  # a private database: nobody else can reach it
        if self._leader_file is None:
            # flock is per machine (not over NFS): SQLite's replicas share one anyway.
            lock_file = open(f"{os.path.realpath(database)}.relay-lock", "a")  # noqa: SIM115 (held while leading)
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                lock_file.close()
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return False  # another relay leads
                raise
            self._leader_file = lock_file
        return True

    def _hold_leadership_locked(self) -> bool:
        if self._leader_connection is not None:
            try:
                self._leader_connection.execute(text("SELECT 1"))
                self._leader_connection.commit()
                return True
            except Exception:
                self._release_leadership_locked()
        connection = self.engine.connect()
        acquired = connection.execute(text(f"SELECT pg_try_advisory_lock({_RELAY_LOCK_ID})")).scalar()
        connection.commit()
        if acquired:
            self._leader_connection = connection
            return True
        connection.close()
        return False

    def _release_leadership(self) -> None:
        with self._leadership_lock:
            self._release_leadership_locked()

    def _release_leadership_locked(self) -> None:
        lock_file, self._leader_file = self._leader_file, None
        if lock_file is not None:
            lock_file.close()  # closing releases the lock
        connection, self._leader_connection = self._leader_connection, None
        if connection is None:
            return
        # close() would only return the connection to the pool, lock and all.
        try:
            connection.execute(text(f"SELECT pg_advisory_unlock({_RELAY_LOCK_ID})"))
            connection.commit()
            connection.close()
        except Exception:
            connection.invalidate()
