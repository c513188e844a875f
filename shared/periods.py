"""Staleness periods, shared by the requests' and the commitments' checks.

Period n (n >= 1) of something unchanged since `since` covers
[since + n * stale_after, since + (n + 1) * stale_after); each period is
announced once."""

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from sqlalchemy.engine import Engine

from shared.group_commit import GroupCommitWriter
from shared.workers import SupervisedWorker

log = logging.getLogger(__name__)

# Claims staged per transaction: one commit holds the write lock this long at most.
CLAIM_BATCH = 200

Due = TypeVar("Due")
Announced = TypeVar("Announced")


def staleness_period(since: datetime, now: datetime, stale_after: timedelta) -> int:
    """The staleness period `now` falls in: 0 while not stale yet, then 1, 2, ..."""
    if stale_after <= timedelta(0):
        raise ValueError("the staleness period must be positive")
    elapsed = now - since
    if elapsed < stale_after:
        return 0  # also when the clock reads earlier than `since`
    return elapsed // stale_after


def period_start(since: datetime, period: int, stale_after: timedelta) -> datetime:
    """When staleness period `period` begins."""
    return since + period * stale_after


async def claim_in_batches(writer: GroupCommitWriter, due: Sequence[Due],
                           claim: Callable[..., list[Announced]]) -> list[Announced]:
    """Run `claim(session, due=batch)` (claim each period and stage its event)
    over `due`, CLAIM_BATCH at a time; returns what was announced."""
    announced: list[Announced] = []
    for start in range(0, len(due), CLAIM_BATCH):
        announced.extend(await writer.run(partial(claim, due=due[start:start + CLAIM_BATCH])))
    return announced


class StalenessWatch:
    """Runs a service's staleness check every `interval` seconds as a
    supervised worker: a failed check (the database away) restarts it with
    backoff, and /readyz names it meanwhile. Subclasses say what they check."""

    name = "staleness"  # the worker's name
    what = "items"  # for the log line

    def __init__(self, *, writer: GroupCommitWriter, read_engine: Engine, clock: Callable[[], datetime],
                 stale_after: timedelta, interval: float) -> None:
        self.writer = writer
        self.read_engine = read_engine
        self.clock = clock
        self.stale_after = stale_after
        self.interval = interval
        self.completed_checks = 0  # for logs and tests: checks run to the end
        self.worker = SupervisedWorker(self.name, self._run)

    async def check_at(self, now: datetime) -> list:
        """Announce what is stale at `now`; returns the events' data."""
        raise NotImplementedError

    async def check(self) -> list:
        announced = await self.check_at(self.clock())
        self.completed_checks += 1
        if announced:
            log.info("announced %d stale %s", len(announced), self.what)
        return announced

    async def _run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()
