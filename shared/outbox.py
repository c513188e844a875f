"""Transactional outbox: events commit with the state change that caused them.

`stage_event` adds a row to the caller's session. When that session commits,
the relay of the same engine is woken at once; it publishes pending rows in id
order with an idempotent `acks=all` producer and marks them published. A crash
between send and mark can only repeat an event (consumers dedupe on its id);
it can never lose one, because a row is marked only after the broker acked it.
"""

import asyncio
import errno
import fcntl
import logging
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from aiokafka import AIOKafkaProducer
from cloudevents.core.v1.event import CloudEvent
from sqlalchemy import event as sa_event
from sqlalchemy import bindparam, func, insert, update
from sqlalchemy.engine import Connection, Engine, Row
from sqlmodel import Session, col, select, text

from shared import metrics
from shared.db import is_sqlite
from shared.events import envelope_json, record_from_envelope, to_json
from shared.group_commit import GroupCommitWriter
from shared.logging import event_id_var
from shared.messaging_models import OutboxMessage, as_utc
from shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)

_PENDING_FLAG = "outbox_pending"
# Wake callbacks per engine, so a commit wakes only the relay of its database.
_wakers: "weakref.WeakKeyDictionary[Engine, list[Callable[[], None]]]" = weakref.WeakKeyDictionary()
# Any constant works; it only has to be the same for every relay of one database.
_RELAY_LOCK_ID = 4_206_2006


_OUTBOX = OutboxMessage.__table__
_INSERT_OUTBOX = insert(_OUTBOX)
_PENDING = (
    select(_OUTBOX.c.id, _OUTBOX.c.event_id, _OUTBOX.c.topic, _OUTBOX.c.message_key, _OUTBOX.c.event_type,
           _OUTBOX.c.envelope)
    .where(_OUTBOX.c.published_at.is_(None))
    .order_by(_OUTBOX.c.id)
    .limit(bindparam("limit"))
)


def stage_event(session: Session, *, topic: str, key: str | None, event: CloudEvent) -> str:
    """Queue `event` for publishing when (and only if) `session` commits;
    returns its id."""
    return _stage(session, topic=topic, key=key, event_id=event.get_id(), event_type=event.get_type(),
                  envelope=to_json(event))


def stage_new_event(
    session: Session, *, topic: str, key: str, type: str, source: str, subject: str | None, data: dict | None
) -> str:
    """`stage_event(new_event(...))` without the SDK objects, for hot write paths."""
    event_id, envelope = envelope_json(type=type, source=source, subject=subject, data=data)
    return _stage(session, topic=topic, key=key, event_id=event_id, event_type=type, envelope=envelope)


@dataclass(frozen=True)
class NewEvent:
    topic: str
    key: str
    type: str
    source: str
    subject: str | None
    data: dict | None


def stage_new_events(session: Session, events: list[NewEvent]) -> list[str]:
    """`stage_new_event` for many events with one statement; returns their ids."""
    if not events:
        return []
    now, rows = datetime.now(UTC), []
    for event in events:
        event_id, envelope = envelope_json(type=event.type, source=event.source, subject=event.subject,
                                           data=event.data)
        rows.append({"event_id": event_id, "topic": event.topic, "message_key": event.key,
                     "event_type": event.type, "envelope": envelope, "created_at": now, "attempts": 0})
    session.connection().execute(_INSERT_OUTBOX, rows)
    session.info[_PENDING_FLAG] = True
    return [row["event_id"] for row in rows]


def _stage(session: Session, *, topic: str, key: str | None, event_id: str, event_type: str, envelope: str) -> str:
    # A plain INSERT on the session's connection, not an ORM object: this is
    # on every write path.
    session.connection().execute(_INSERT_OUTBOX, {
        "event_id": event_id, "topic": topic, "message_key": key, "event_type": event_type,
        "envelope": envelope, "created_at": datetime.now(UTC), "attempts": 0,
    })
    session.info[_PENDING_FLAG] = True
    return event_id


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
    """Unpublished rows and the age in seconds of the oldest one (0 when empty)."""
    count, oldest = session.exec(
        select(func.count(), func.min(OutboxMessage.created_at)).where(col(OutboxMessage.published_at).is_(None))
    ).one()
    age = (datetime.now(UTC) - as_utc(oldest)).total_seconds() if oldest else 0.0
    return int(count), max(age, 0.0)


class OutboxRelay:
    def __init__(
        self,
        *,
        engine: Engine,
        producer: AIOKafkaProducer,
        poll_interval: float = 1.0,
        batch_size: int = 500,
        writer: "GroupCommitWriter | None" = None,
        read_engine: Engine | None = None,
    ) -> None:
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
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._leader_connection: Connection | None = None
        self._leader_file: IO | None = None
        # Leadership is taken in a worker thread that a cancelled task does not
        # stop: the lock and flag keep a late acquisition from outliving stop().
        self._leadership_lock = threading.Lock()
        self._stopped = False

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        _wakers.setdefault(self.engine, []).append(self.wake)
        self._task = asyncio.create_task(self.run(), name="outbox-relay")

    async def stop(self) -> None:
        self._stopped = True
        wakers = _wakers.get(self.engine, [])
        if self.wake in wakers:
            wakers.remove(self.wake)
        await cancel_and_wait(self._task)
        await asyncio.to_thread(self._release_leadership)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """Safe to call from any thread (commits happen in FastAPI's thread pool)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wakeup.set)

    async def run(self) -> None:
        failures = 0
        while True:
            self._wakeup.clear()
            try:
                published = await self.publish_pending()
                failures = 0
            except Exception:
                failures += 1
                delay = min(0.2 * 2**failures, 5.0)
                log.warning("outbox relay round failed; retrying in %.1fs", delay, exc_info=True)
                await asyncio.sleep(delay)
                continue
            if published >= self.batch_size:
                continue  # more rows are probably waiting
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.poll_interval)
            except TimeoutError:
                pass

    # -- one round -----------------------------------------------------------
    async def publish_pending(self) -> int:
        """Publish one batch of pending rows; return how many were published."""
        if not await asyncio.to_thread(self._hold_leadership):
            return 0
        rows = await asyncio.to_thread(self._load_pending)
        if not rows:
            return 0
        # Send the batch, then keep the longest prefix the broker acknowledged:
        # those rows are marked published, the first failed row records its
        # error, and nothing after it counts as sent, so per-key order holds
        # and a failing row never makes the rows before it go out again.
        outcomes: list[BaseException | None] = []
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
        sent, failure = [], None
        for row, outcome in zip(rows, outcomes):
            result = outcome if isinstance(outcome, BaseException) else next(settled)
            if isinstance(result, BaseException):
                failure = (row, result)
                break
            sent.append(row)
        for row in sent:
            metrics.KAFKA_PRODUCED.labels(topic=row.topic, outcome="ok").inc()
            token = event_id_var.set(row.event_id)
            log.debug("published %s to %s", row.event_type, row.topic)
            event_id_var.reset(token)
        ids = [row.id for row in sent]
        if ids:
            if self.writer is not None:
                await self.writer.run(lambda session: self._mark_in(session, ids))
            else:
                await asyncio.to_thread(self._mark_published, ids)
        if failure is not None:
            row, error = failure
            metrics.KAFKA_PRODUCED.labels(topic=row.topic, outcome="error").inc()
            await asyncio.to_thread(self._record_failure, [row.id], repr(error))
            raise RuntimeError(f"outbox row {row.id} ({row.event_type}) was not published: {error!r}") from error
        return len(sent)

    def _load_pending(self) -> list[Row]:
        # Plain rows, not ORM objects: every event the service emits passes here.
        with self.read_engine.connect() as connection:
            return list(connection.execute(_PENDING, {"limit": self.batch_size}))

    def _mark_published(self, ids: list[int | None]) -> None:
        with Session(self.engine) as session:
            self._mark_in(session, ids)
            session.commit()

    @staticmethod
    def _mark_in(session: Session, ids: list[int | None]) -> None:
        session.exec(
            update(OutboxMessage)
            .where(col(OutboxMessage.id).in_(ids))
            .values(published_at=datetime.now(UTC), attempts=OutboxMessage.attempts + 1, last_error=None)
        )

    def _record_failure(self, ids: list[int | None], error: str) -> None:
        with Session(self.engine) as session:
            session.exec(
                update(OutboxMessage)
                .where(col(OutboxMessage.id).in_(ids))
                .values(attempts=OutboxMessage.attempts + 1, last_error=error[:2000])
            )
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
