"""The dispatcher's concurrency: a claim loop (a supervised worker) that
leases due deliveries a round ahead of the send slots, one task per claimed
delivery that waits for a slot and sends it, and outcomes recorded in
batches. New deliveries are claimed in the transaction that creates them
when there is room (`claim_at_creation`, then `take_over` after the commit),
which spares them a claim's commit on their way. What is claimed, sent and
recorded is decided elsewhere (statements, attempt, schedule, struggling)."""

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import aiohttp

from notifications_service.config import NotificationsSettings
from notifications_service.delivery import statements
from notifications_service.delivery.attempt import Claimed, Outcome, send_attempt, webhook_client
from notifications_service.delivery.schedule import RetryPolicy
from notifications_service.delivery.struggling import StrugglingReceivers
from notifications_service.webhooks import AddressGuard
from shared import metrics
from shared.group_commit import GroupCommitWriter
from shared.messaging_models import utcnow
from shared.retry import Backoff
from shared.tasks import cancel_and_wait
from shared.workers import SupervisedWorker

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, *, engine, read_engine, writer: GroupCommitWriter, settings: NotificationsSettings,
                 rng: random.Random | None = None, clock: Callable[[], datetime] = utcnow,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.read_engine = read_engine
        self.writer = writer
        self.settings = settings
        self.policy = RetryPolicy.from_settings(settings)
        self.rng = rng or random.Random()
        self.clock = clock
        self.guard = AddressGuard(allow_private=settings.webhook_allow_private_addresses)
        self.struggling = StrugglingReceivers(
            settings.delivery_concurrency_struggling_endpoint,
            slow_after_ms=settings.webhook_timeout_seconds * 1000 / 2, clock=monotonic)
        self.worker = SupervisedWorker("webhook-dispatcher", self._claim_loop)
        poll = settings.delivery_poll_interval_seconds
        self._claim_backoff = Backoff(first=poll, cap=10 * poll)
        self._lease_length = timedelta(
            seconds=2 * settings.webhook_timeout_seconds + settings.webhook_lease_margin_seconds)
        self._taking_over: set[asyncio.Task] = set()
        self._recorder = _BatchRecorder(self._record)
        self._claim_latency = metrics.EVENT_HOP_LATENCY.labels(metrics.HOP_DELIVERY_CLAIM)
        self._send_latency = metrics.EVENT_HOP_LATENCY.labels(metrics.HOP_WEBHOOK_SEND)
        self._wakeup = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._claim_loop_ended = asyncio.Event()
        self._send_slots = asyncio.Semaphore(settings.delivery_concurrency)
        self._in_flight: dict[str, asyncio.Task] = {}  # claimed, until recorded
        self._waiting: dict[str, Claimed] = {}  # claimed, waiting for a send slot
        # Claimed and not yet sent (waiting for a slot or being sent), by agency.
        self._unsent_by_agency: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: aiohttp.ClientSession | None = None
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = webhook_client(self.settings, self.guard)
        self.worker.start()

    async def stop(self) -> None:
        """Stop claiming; let attempts in flight finish and be recorded (each
        is bounded by the timeout), so a restart does not send them again.
        Claimed deliveries not yet sent are not sent: their leases are
        released, so they are due again at once after a restart."""
        self._stopping = True
        grace = self.settings.webhook_timeout_seconds + 5
        # The loop ends at its next wait: a claim in progress is finished, not
        # cut off (its rows would stay leased, unsent, a whole lease).
        self._wakeup.set()
        self._slot_freed.set()
        if self.worker.running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._claim_loop_ended.wait(), timeout=grace)
        await self.worker.stop()  # what is left: a loop past its grace, or a wait to restart
        if self._taking_over:  # they release what they were handed, now that it will not be sent
            await asyncio.wait(list(self._taking_over), timeout=grace)
        waiting, self._waiting = list(self._waiting.values()), {}
        if waiting:
            await self._release(waiting)
        if self._in_flight:
            _done, late = await asyncio.wait(list(self._in_flight.values()), timeout=grace)
            for task in late:  # not recorded: their leases run out and they are sent again
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._recorder.finish(grace=5)
        if self._client is not None:
            await self._client.close()

    @property
    def running(self) -> bool:
        return self.worker.running

    def wake(self) -> None:
        """Safe from any thread: new deliveries were committed."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wakeup.set)

    # -- claiming ------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        self._claim_loop_ended.clear()
        try:
            await self._claim_until_stopped()
        finally:
            self._claim_loop_ended.set()

    async def _claim_until_stopped(self) -> None:
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
            rooms = self.struggling.rooms(self._unsent_by_agency)
            try:
                claimed = await self._claim(min(free, self.settings.delivery_batch_size), rooms)
            except Exception:
                delay = self._claim_backoff.next_delay()
                log.exception("claiming due deliveries failed; trying again in %.1fs", delay)
                await asyncio.sleep(delay)
                continue
            self._claim_backoff.reset()
            self._send_claimed(claimed)
            if len(claimed) == min(free, self.settings.delivery_batch_size):
                continue  # a full claim: more may be due already
            # Fewer than asked: nothing else was due, and what becomes due
            # (new deliveries) wakes this loop, so there is no claim to try now.
            wait = self.settings.delivery_poll_interval_seconds
            # (With struggling agencies held back, what is due may be theirs:
            # wait for one of their sends to end, which wakes this loop.)
            next_due = None if rooms else await asyncio.to_thread(
                statements.next_due, self.read_engine, self.clock())
            if next_due is not None:
                wait = min(wait, max((next_due - self.clock()).total_seconds(), 0.01))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=wait)

    def _send_claimed(self, claimed: list[Claimed]) -> None:
        for delivery in claimed:
            self._unsent_by_agency[delivery.agency_id] += 1
            self._waiting[delivery.delivery_id] = delivery
            self._in_flight[delivery.delivery_id] = asyncio.create_task(
                self._attempt(delivery), name=f"delivery-{delivery.delivery_id}")

    async def _claim(self, limit: int, struggling_rooms: dict[str, int]) -> list[Claimed]:
        now = self.clock()
        lease = now + self._lease_length
        ids = await self.writer.run(statements.claim_work(now, lease, limit, struggling_rooms))
        if not ids:
            return []
        claimed = await asyncio.to_thread(statements.load_claimed, self.read_engine, ids, now, lease)
        for delivery in claimed:
            if delivery.due_at is not None:
                self._claim_latency.observe(max((now - delivery.due_at).total_seconds(), 0.0))
        return claimed

    # -- claiming new deliveries as they are created --------------------------------------
    def claim_at_creation(self, agency_ids: list[str]) -> tuple[datetime, datetime, list[bool]]:
        """Asked in the transaction that creates deliveries for `agency_ids`
        (the group commit's thread): the claim's time, its lease (written in
        that transaction), and which of them this dispatcher claims at once. Only while it
        runs, within the room its claim loop keeps (a round ahead of the
        send slots), and never for a struggling agency, whose claims are
        counted out by the claim loop. After the commit they are handed over
        by `take_over`; until then they count against nothing, so a few
        batches at once may take a little more than the room."""
        now = self.clock()
        lease = now + self._lease_length
        if self._stopping or not self.worker.running:
            return now, lease, [False] * len(agency_ids)
        # A copy taken at once: the event loop changes the counter meanwhile.
        room = 2 * self.settings.delivery_concurrency - sum(list(self._unsent_by_agency.values()))
        taken = []
        for agency_id in agency_ids:
            take = room > 0 and agency_id not in self.struggling
            room -= take
            taken.append(take)
        return now, lease, taken

    def take_over(self, claimed: list[Claimed]) -> None:
        """Safe from any thread: deliveries claimed at creation are committed; send them."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._start_taking_over, claimed)

    def _start_taking_over(self, claimed: list[Claimed]) -> None:
        task = asyncio.create_task(self._take_over(claimed), name="take-over-deliveries")
        self._taking_over.add(task)
        task.add_done_callback(self._taking_over.discard)

    async def _take_over(self, claimed: list[Claimed]) -> None:
        if self._stopping:
            await self._release(claimed)
            return
        for _ in claimed:
            self._claim_latency.observe(0.0)  # due when created, and claimed then
        self._send_claimed(claimed)

    async def _release(self, claimed: list[Claimed]) -> None:
        try:
            await self.writer.run(lambda session: statements.release(session, claimed))
        except Exception:
            log.warning("could not release %d unsent deliveries; their leases will run out", len(claimed),
                        exc_info=True)

    # -- sending -------------------------------------------------------------------------
    async def _attempt(self, claimed: Claimed) -> None:
        # The slot is for sending; recording waits for a commit, and holding
        # the slot meanwhile would leave the receiver idle.
        try:
            try:
                async with self._send_slots:
                    self._waiting.pop(claimed.delivery_id, None)
                    if self._stopping:
                        return  # not sent; stop() releases its lease
                    assert self._client is not None  # made by start(), before any claim
                    outcome = await send_attempt(self._client, self.guard, claimed, clock=self.clock)
                    if claimed.claimed_at is not None:
                        self._send_latency.observe(max((self.clock() - claimed.claimed_at).total_seconds(), 0.0))
            finally:
                self._unsent_by_agency[claimed.agency_id] -= 1
                if not self._unsent_by_agency[claimed.agency_id]:
                    del self._unsent_by_agency[claimed.agency_id]
                self._slot_freed.set()
            if claimed.agency_id in self.struggling:
                self._wakeup.set()  # more of its deliveries may be claimed now
            self.struggling.note(claimed.agency_id, outcome.outcome, outcome.duration_ms)
            await self._recorder.record(outcome)
        except Exception:
            # Not recorded: the lease runs out and the delivery is tried again.
            log.exception("the outcome of delivery %s could not be recorded", claimed.delivery_id)
        finally:
            self._in_flight.pop(claimed.delivery_id, None)

    async def _record(self, outcomes: list[Outcome]) -> None:
        await self.writer.run(lambda session: statements.record_outcomes(
            session, outcomes, policy=self.policy, rng=self.rng, now=self.clock()))


class _BatchRecorder:
    """Outcomes that end together are recorded together: one statement per
    kind of row for the lot, instead of several per outcome. `record`
    returns once its outcome is committed (or raises why not)."""

    def __init__(self, record_batch: Callable[[list[Outcome]], Awaitable[None]]) -> None:
        self._record_batch = record_batch
        self._unrecorded: list[tuple[Outcome, asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    async def record(self, outcome: Outcome) -> None:
        future = asyncio.get_running_loop().create_future()
        self._unrecorded.append((outcome, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._record_pending(), name="record-outcomes")
        await future

    async def finish(self, *, grace: float) -> None:
        """Give the outcomes still being recorded `grace` seconds, then cancel."""
        if self._task is not None and not self._task.done():
            _done, pending = await asyncio.wait([self._task], timeout=grace)
            if pending:
                await cancel_and_wait(self._task)

    async def _record_pending(self) -> None:
        while self._unrecorded:
            batch, self._unrecorded = self._unrecorded, []
            try:
                await self._record_batch([outcome for outcome, _ in batch])
            except Exception as error:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
