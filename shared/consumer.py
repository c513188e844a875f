"""Idempotent consumer: effects and the processed event id commit together.

For every record: parse the CloudEvent; if (group, source, id) is already in
the inbox, skip it; otherwise run the handler and record the id in the same
database transaction. Offsets are committed to Kafka only after that, so a
crash replays records, and replays have no second effect.

Every write goes through the service's group-commit writer: a partition's
records are applied a run at a time in one transaction (the runs of the
partitions of one poll side by side, so they share a commit), and a record
that does not apply cleanly is taken on alone. The poll loop runs as a supervised
worker (`consumer:<group id>`): if it fails it is restarted after a backoff,
from the first record it had not applied.

While a poll's records are being applied, the next ones are read ahead (up
to `max_poll_records`). aiokafka sends no new fetch while fetched records wait
to be taken, so without this a record arriving during a commit waited for
that commit, then for a fetch, then for the commit after it.

A record that cannot be processed goes to the service's dead-letter topic with
the reason and its origin in headers, and the consumer carries on with the
next one. A database outage is not the record's fault: the consumer waits and
retries instead of dead-lettering everything.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from cloudevents.core.v1.event import CloudEvent
from opentelemetry.trace import Span, use_span
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlmodel import Session

from shared import metrics
from shared.db import table_of
from shared.events import InvalidEvent, from_kafka
from shared.group_commit import GroupCommitWriter, call_after_commit
from shared.kafka import make_consumer
from shared.logging import event_id_var
from shared.messaging_models import ProcessedEvent, utcnow
from shared.retry import Backoff
from shared.tasks import cancel_and_wait
from shared.tracing import handling, in_trace_of
from shared.workers import SupervisedWorker

log = logging.getLogger(__name__)

# What a handler returns: "processed" (default) or "ignored" (e.g. an unknown type).
Handler = Callable[[Session, CloudEvent], str | None]
# A handler may also offer `handle_many(session, events) -> outcomes`: a
# backlog is then applied a run at a time (one statement per kind of row,
# not several per event). It must have the same effects as calling the
# handler on each event in order. While it runs, the log context's event id
# (`event_id_var`) is the ids of its events in order, joined by commas.
BatchHandler = Callable[[Session, list[CloudEvent]], list[str]]

# The longest wait between two tries of anything the consumer retries.
RETRY_CAP_SECONDS = 5.0
# Records read ahead of those being applied, at most (aiokafka's max_poll_records).
READ_AHEAD_RECORDS = 500
# How often the lag gauge is brought up to date.
LAG_UPDATE_SECONDS = 1.0


class PoisonMessage(Exception):
    """Raised by a handler for a record that can never be processed."""


_INBOX = table_of(ProcessedEvent)


class _RunStopped(Exception):
    """A run of records could not be applied together: `index` is the record
    that stopped it (None: the inbox rows clashed), `error` its error (None:
    not a valid event)."""

    def __init__(self, index: int | None, error: Exception | None) -> None:
        super().__init__(f"run stopped at record {index}: {error!r}")
        self.index, self.error = index, error


class _BatchFailed(Exception):
    """`handle_many` failed for a run: which record failed is found by
    applying the run again one handler call at a time."""


class AlreadyProcessed(Exception):
    """The inbox already holds this event: another replica handled it."""


# Errors that say the database cannot be used right now (down, locked, pool
# exhausted, schema not migrated yet), as opposed to a record it cannot take.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeoutError, ProgrammingError)


class IdempotentConsumer:
    def __init__(
        self,
        *,
        bootstrap_servers: str,
        group_id: str,
        client_id: str,
        topics: list[str],
        handler: Handler,
        producer: AIOKafkaProducer,
        dead_letter_topic: str,
        writer: GroupCommitWriter,
        max_attempts: int = 3,
        retry_delay: float = 0.2,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.group_id = group_id
        self.topics = topics
        self.handler = handler
        # A failed batch costs the record then found to have failed it one
        # attempt, and finding it costs another: with a single attempt
        # allowed there is no room for both, so runs are handled event by event.
        self.handle_many: BatchHandler | None = getattr(handler, "handle_many", None) if max_attempts > 1 else None
        self.producer = producer
        self.dead_letter_topic = dead_letter_topic
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        # Effects join the service's group commit (one writer per database).
        self.writer = writer
        self.consumer: AIOKafkaConsumer = make_consumer(bootstrap_servers, group_id=group_id, client_id=client_id)
        self._processing = asyncio.Lock()
        # Read ahead, not yet applied: by partition, in order (see _read_ahead).
        self._fetched: dict[TopicPartition, list[ConsumerRecord]] = {}
        self._fetched_count = 0
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._lag_updated = 0.0
        self._uncommitted: dict[TopicPartition, int] = {}
        # Offsets go to Kafka while the next records are applied: applied
        # records are in the inbox, so a late commit only means replays.
        self._committing: asyncio.Task | None = None
        self._consumed = metrics.EVENT_HOP_LATENCY.labels(metrics.HOP_CONSUME)
        self.worker = SupervisedWorker(f"consumer:{group_id}", self._poll_forever, backoff=self._backoff())

    def _backoff(self) -> Backoff:
        """Delays for one retrying loop, starting at `retry_delay`."""
        return Backoff(first=self.retry_delay, cap=max(self.retry_delay, RETRY_CAP_SECONDS))

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        # Without a running writer every record would fail and be dead-lettered.
        if not self.writer.worker.started:
            raise RuntimeError("start the group-commit writer before the consumer")
        self.consumer.subscribe(self.topics, listener=_CommitOnRevoke(self))
        await self.consumer.start()
        self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()
        try:
            await self._offsets_committed()
            await self._commit_uncommitted()
        finally:
            await self.consumer.stop()

    @property
    def running(self) -> bool:
        return self.worker.running

    def assigned_partitions(self) -> set[TopicPartition]:
        return set(self.consumer.assignment())

    # -- the loop --------------------------------------------------------------
    async def _poll_forever(self) -> None:
        # An error ends the loop; the worker logs it, counts it and starts it
        # again after a backoff, from the first record not applied.
        reader = asyncio.create_task(self._read_ahead(), name=f"read-ahead:{self.group_id}")
        try:
            while True:
                await self._poll_once(reader)
        finally:
            await cancel_and_wait(reader)
            self._rewind({})  # what was read ahead is read again

    async def _read_ahead(self) -> None:
        """Keep fetching while records are applied: each getmany lets aiokafka
        send its next fetch, so records reach `_fetched` as they are produced."""
        while True:
            room = READ_AHEAD_RECORDS - self._fetched_count
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            batches = await self.consumer.getmany(timeout_ms=500, max_records=room)
            for partition, records in batches.items():
                self._fetched.setdefault(partition, []).extend(records)
                self._fetched_count += len(records)
            if batches:
                self._arrived.set()

    async def _next_batches(self, reader: asyncio.Task) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Everything read ahead so far, once there is something (or after
        half a second, when it may be nothing). A failed reader fails the loop."""
        if not self._fetched and not reader.done():
            self._arrived.clear()
            arrived = asyncio.ensure_future(self._arrived.wait())
            try:
                await asyncio.wait({arrived, reader}, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            finally:
                arrived.cancel()
        if reader.done():
            reader.result()  # its error, or CancelledError
            raise RuntimeError("the read-ahead task ended")
        batches, self._fetched, self._fetched_count = self._fetched, {}, 0
        self._room.set()
        return batches

    async def _poll_once(self, reader: asyncio.Task) -> None:
        batches = await self._next_batches(reader)
        async with self._processing:
            assignment = self.consumer.assignment()
            # Partitions side by side, each in order: their runs reach the
            # writer together and share one commit, instead of one each.
            failures = [outcome for outcome in await asyncio.gather(
                *(self._consume_together(partition, records) for partition, records in batches.items()
                  if partition in assignment),  # one revoked meanwhile is read by its new owner
                return_exceptions=True) if isinstance(outcome, BaseException)]
            if failures:
                await cancel_and_wait(reader)  # so that nothing is fetched from the old positions
                self._rewind(batches)
                raise failures[0]
        if self._uncommitted and (self._committing is None or self._committing.done()):
            self._committing = asyncio.create_task(self._commit_uncommitted(), name=f"commit-offsets:{self.group_id}")
        if time.monotonic() - self._lag_updated >= LAG_UPDATE_SECONDS:
            self._lag_updated = time.monotonic()
            await self._update_lag()

    async def _offsets_committed(self) -> None:
        """Wait for the offset commit in flight, if any (it never raises)."""
        if self._committing is not None:
            await asyncio.shield(self._committing)

    def _rewind(self, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """The fetch position is past every record fetched: move it back to
        the first one not applied, of `batches` (being applied) or else of
        those read ahead, or the restarted loop would skip them (and commit
        offsets past them). The read-ahead records are dropped."""
        assignment = self.consumer.assignment()
        firsts = {partition: records[0].offset for partition, records in self._fetched.items() if records}
        firsts |= {partition: records[0].offset for partition, records in batches.items() if records}
        self._fetched, self._fetched_count = {}, 0
        self._room.set()
        for partition, first in firsts.items():
            if partition in assignment:
                self.consumer.seek(partition, max(first, self._uncommitted.get(partition, 0)))

    async def _consume_together(self, partition: TopicPartition, records: list[ConsumerRecord]) -> None:
        """A partition's records, in order, in one shared transaction (one
        commit for a backlog, not one per record). A record that does not
        apply cleanly undoes the run; the records before it are applied again
        as a run, and it is taken on alone by `_consume` (retries, waiting for
        the database, dead letters). Then the rest go on."""
        position = 0
        batched = self.handle_many is not None
        # handle_many just failed (not for want of the database): the record
        # the run now stops at is the one that failed it, an attempt it made.
        batch_failed = False
        while position < len(records):
            run = records[position:]
            try:
                outcomes = await self.writer.run(partial(self._apply_run, records=run, batched=batched))
            except _BatchFailed as batch_error:
                log.warning("a batch of %d records failed (%r); finding the record one by one", len(run),
                            batch_error.__cause__)
                batched = False
                batch_failed = not isinstance(batch_error.__cause__, DATABASE_UNAVAILABLE)
                continue
            except _RunStopped as stopped:
                if stopped.index is None:  # the inbox rows clashed: another replica is on these records
                    await self._one_by_one(partition, run)
                    return
                if stopped.index > 0:
                    prefix = run[:stopped.index]
                    try:
                        self._count(partition, prefix,
                                    await self.writer.run(partial(self._apply_run, records=prefix)))
                    except Exception:
                        await self._one_by_one(partition, prefix)
                record = run[stopped.index]
                if isinstance(stopped.error, PoisonMessage):
                    await self._dead_letter(record, reason="rejected_by_handler", detail=str(stopped.error))
                else:
                    # A handler error was an attempt (two, after a failed
                    # batch); waiting out the database, or an invalid event, is not.
                    failed = stopped.error is not None and not isinstance(stopped.error, DATABASE_UNAVAILABLE)
                    attempts = (2 if batch_failed else 1) if failed else 0
                    await self._consume(record, attempts_made=attempts, last_error=stopped.error)
                self._uncommitted[partition] = record.offset + 1
                position += stopped.index + 1
                batched, batch_failed = self.handle_many is not None, False
                continue
            except Exception:
                # The database failed the run: one by one, which waits it out.
                # (Skipping on would lose these records: the fetch position is past them.)
                await self._one_by_one(partition, run)
                return
            self._count(partition, run, outcomes)
            position += len(run)

    async def _one_by_one(self, partition: TopicPartition, records: list[ConsumerRecord]) -> None:
        for record in records:
            await self._consume(record)
            self._uncommitted[partition] = record.offset + 1

    def _count(self, partition: TopicPartition, records: list[ConsumerRecord], outcomes: list[str]) -> None:
        applied = time.time()
        for record, outcome in zip(records, outcomes, strict=True):
            metrics.KAFKA_CONSUMED.labels(record.topic, self.group_id, outcome).inc()
            self._observe_consumed(record, applied)
            self._uncommitted[partition] = record.offset + 1

    def _observe_consumed(self, record: ConsumerRecord, applied: float) -> None:
        # The record's timestamp is its producer's clock: across machines, skew counts too.
        self._consumed.observe(max(applied - record.timestamp / 1000, 0.0))

    def _apply_run(self, session: Session, records: list[ConsumerRecord], *, batched: bool = False) -> list[str]:
        """Apply every record, or raise _RunStopped or _BatchFailed (and the
        writer undoes them all). Duplicates are found with one query and the
        inbox rows written with one statement: this is the path a backlog
        takes. `batched`: the new events go to `handle_many` together.

        This runs on the writer's thread, whose log context is not the
        consumer's: the event ids are set here."""
        events = []
        for index, record in enumerate(records):
            try:
                events.append(from_kafka(key=record.key, value=record.value, headers=record.headers))
            except InvalidEvent as error:
                raise _RunStopped(index, None) from error
        connection = session.connection()
        seen = {
            (source, event_id) for source, event_id in connection.execute(
                select(_INBOX.c.event_source, _INBOX.c.event_id)
                .where(_INBOX.c.consumer_group == self.group_id,
                       _INBOX.c.event_id.in_({event.get_id() for event in events}))
            )
        }
        outcomes: list[str] = []
        fresh: list[int] = []  # indexes of the events not processed before
        inbox_rows = []
        now = utcnow()
        for index, (record, event) in enumerate(zip(records, events, strict=True)):
            key = (event.get_source(), event.get_id())
            if key in seen:
                outcomes.append("duplicate")
                continue
            seen.add(key)
            fresh.append(index)
            if batched:
                outcomes.append("")  # filled in below
            else:
                token = event_id_var.set(event.get_id())
                try:
                    with handling([event], topic=record.topic, group=self.group_id) as spans:
                        outcomes.append(self.handler(session, event) or "processed")
                        session.flush()
                    self._note_handled(session, record, [event], spans, outcomes[-1:])
                except Exception as error:
                    raise _RunStopped(index, error) from error
                finally:
                    event_id_var.reset(token)
            inbox_rows.append({"consumer_group": self.group_id, "event_source": key[0], "event_id": key[1],
                               "topic": record.topic, "partition": record.partition, "offset": record.offset,
                               "processed_at": now})
        if batched and fresh:
            assert self.handle_many is not None  # `batched` only when the handler has one
            batch = [events[index] for index in fresh]
            token = event_id_var.set(",".join(event.get_id() for event in batch))
            try:
                with handling(batch, topic=records[0].topic, group=self.group_id) as spans:
                    handled = self.handle_many(session, batch)
                    session.flush()
                for index, outcome in zip(fresh, handled, strict=True):
                    outcomes[index] = outcome or "processed"
                self._note_handled(session, records[0], batch, spans, [outcomes[index] for index in fresh])
            except Exception as error:
                raise _BatchFailed() from error
            finally:
                event_id_var.reset(token)
        if inbox_rows:
            try:
                connection.execute(insert(_INBOX), inbox_rows)
            except IntegrityError as error:
                raise _RunStopped(None, error) from error
        return outcomes

    async def _consume(
        self, record: ConsumerRecord, *, attempts_made: int = 0, last_error: Exception | None = None
    ) -> None:
        """One record alone: retried until the handler has failed
        `max_attempts` times in all (`attempts_made` of them already, the last
        with `last_error`), then dead-lettered."""
        try:
            event = from_kafka(key=record.key, value=record.value, headers=record.headers)
        except InvalidEvent as error:
            await self._dead_letter(record, reason="invalid_event", detail=str(error))
            return
        token = event_id_var.set(event.get_id())
        try:
            failures, outages = attempts_made, 0
            between_attempts, waiting_for_database = self._backoff(), self._backoff()
            while failures < self.max_attempts:
                try:
                    outcome = await self.writer.run(lambda session: self._apply_in(session, event, record))
                    metrics.KAFKA_CONSUMED.labels(record.topic, self.group_id, outcome).inc()
                    self._observe_consumed(record, time.time())
                    return
                except AlreadyProcessed:
                    metrics.KAFKA_CONSUMED.labels(record.topic, self.group_id, "duplicate").inc()
                    return
                except PoisonMessage as error:
                    await self._dead_letter(record, reason="rejected_by_handler", detail=str(error))
                    return
                except DATABASE_UNAVAILABLE as error:
                    # The database is down, locked, or not migrated yet: that is
                    # not the record's fault. Wait; never count it as an attempt.
                    outages += 1
                    level = logging.ERROR if outages % 20 == 0 else logging.WARNING
                    log.log(level, "database not usable while consuming (%s); retrying", type(error).__name__)
                    await waiting_for_database.sleep()
                except Exception as error:
                    failures, last_error = failures + 1, error
                    if failures < self.max_attempts:
                        await between_attempts.sleep()
            log.error("handler failed %d times; dead-lettering", failures, exc_info=last_error)
            await self._dead_letter(
                record, reason="handler_failed", detail=f"{type(last_error).__name__}: {last_error}"
            )
        finally:
            event_id_var.reset(token)

    def _apply_in(self, session: Session, event: CloudEvent, record: ConsumerRecord) -> str:
        key = (self.group_id, event.get_source(), event.get_id())
        if session.get(ProcessedEvent, key) is not None:
            return "duplicate"
        # The writer's thread does not share the consumer's log context.
        token = event_id_var.set(event.get_id())
        try:
            with handling([event], topic=record.topic, group=self.group_id) as spans:
                outcome = self.handler(session, event) or "processed"
                # The handler's own constraint violations surface here, as its errors
                # (retried, then dead-lettered), never mistaken for a duplicate.
                session.flush()
            self._note_handled(session, record, [event], spans, [outcome])
        finally:
            event_id_var.reset(token)
        inbox = session.begin_nested()
        try:
            session.add(ProcessedEvent(
                consumer_group=self.group_id, event_source=event.get_source(), event_id=event.get_id(),
                topic=record.topic, partition=record.partition, offset=record.offset,
            ))
            session.flush()
            inbox.commit()
        except IntegrityError as error:
            # Only the inbox row was being written: another replica committed
            # this event first, and its effects stand (the writer undoes ours).
            inbox.rollback()
            raise AlreadyProcessed() from error
        return outcome

    def _note_handled(self, session: Session, record: ConsumerRecord, events: list[CloudEvent], spans: list[Span],
                      outcomes: list[str]) -> None:
        """Once committed, a log line per handled event in the trace it
        continues: how `caj trace` follows a request through the consumers.
        (`record`: the run's first, for its topic.)"""
        if not log.isEnabledFor(logging.INFO):
            return

        def note() -> None:
            for event, span, outcome in zip(events, spans, outcomes, strict=True):
                event_token = event_id_var.set(event.get_id())
                try:
                    with use_span(span, end_on_exit=False):
                        log.info("%s %s from %s", outcome, event.get_type(), record.topic,
                                 extra={"consumer_group": self.group_id, "outcome": outcome})
                finally:
                    event_id_var.reset(event_token)

        call_after_commit(session, note)

    async def _dead_letter(self, record: ConsumerRecord, *, reason: str, detail: str) -> None:
        headers = [(name, value) for name, value in record.headers if not name.startswith("dlq.")]
        headers += [
            ("dlq.reason", reason.encode()),
            ("dlq.detail", detail[:2000].encode()),
            ("dlq.original.topic", record.topic.encode()),
            ("dlq.original.partition", str(record.partition).encode()),
            ("dlq.original.offset", str(record.offset).encode()),
            ("dlq.consumer.group", self.group_id.encode()),
        ]
        # The offset is committed only once the dead letter is acknowledged.
        publishing = self._backoff()
        while True:
            try:
                await self.producer.send_and_wait(
                    self.dead_letter_topic, value=record.value, key=record.key, headers=headers
                )
                break
            except Exception:
                delay = publishing.next_delay()
                log.warning("dead-letter publish failed; retrying in %.1fs", delay, exc_info=True)
                await asyncio.sleep(delay)
        with in_trace_of(dict(record.headers).get("ce_traceparent")):
            log.error(
                "dead-lettered record %s/%d@%d: %s (%s)", record.topic, record.partition, record.offset, reason,
                detail
            )
        metrics.KAFKA_CONSUMED.labels(record.topic, self.group_id, "dead_lettered").inc()
        metrics.KAFKA_DEAD_LETTERS.labels(record.topic, self.group_id, reason).inc()

    async def _commit_uncommitted(self, partitions: set[TopicPartition] | None = None) -> None:
        offsets = {
            partition: offset
            for partition, offset in self._uncommitted.items()
            if partitions is None or partition in partitions
        }
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except Exception:
            # Harmless: the records are redelivered and the inbox skips them.
            log.warning("offset commit failed; records may be redelivered", exc_info=True)
            return
        for partition, offset in offsets.items():
            if self._uncommitted.get(partition) == offset:
                del self._uncommitted[partition]

    async def _update_lag(self) -> None:
        for partition in list(self.consumer.assignment()):
            if partition not in self.consumer.assignment():
                continue  # revoked while we awaited the previous position
            highwater = self.consumer.highwater(partition)
            if highwater is None:
                continue
            try:
                position = await self.consumer.position(partition)
            except Exception:
                continue
            metrics.KAFKA_CONSUMER_LAG.labels(partition.topic, str(partition.partition), self.group_id).set(
                max(highwater - position, 0)
            )


class _CommitOnRevoke(ConsumerRebalanceListener):
    """Before partitions move to another replica, finish the batch and commit."""

    def __init__(self, owner: IdempotentConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.owner._processing:
            await self.owner._offsets_committed()
            await self.owner._commit_uncommitted(set(revoked))
            for partition in revoked:
                self.owner._uncommitted.pop(partition, None)
                # Read ahead but not applied: the new owner reads them from the committed offset.
                self.owner._fetched_count -= len(self.owner._fetched.pop(partition, []))
        log.info("partitions revoked: %s", sorted(f"{p.topic}/{p.partition}" for p in revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("partitions assigned: %s", sorted(f"{p.topic}/{p.partition}" for p in assigned))
