"""Group commit: concurrent write operations share one database commit.

Each operation runs inside its own SAVEPOINT, so one that fails is undone
alone and reports its own error; the others commit together. A caller's
future resolves only after the commit, so an acknowledged write is durable,
and the commit costs one fsync however many requests it carries.
"""

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session

from shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)
T = TypeVar("T")

Work = Callable[[Session], Any]


class GroupCommitWriter:
    def __init__(self, engine: Engine, *, max_batch: int = 128) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Work, asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def run(self, work: Callable[[Session], T]) -> T:
        """Run `work(session)` in a transaction shared with other writers;
        return its result once committed, or raise its error."""
        if self._queue is None:
            raise RuntimeError("the writer is not started")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((work, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            outcomes = await asyncio.to_thread(self._commit_batch, [work for work, _ in batch])
            for (_, future), (ok, value) in zip(batch, outcomes):
                if future.done():
                    continue  # the caller went away; its work is committed all the same
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _commit_batch(self, works: list[Work]) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        after_commit: list[Callable[[], None]] = []
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                for work in works:
                    savepoint = session.begin_nested()
                    try:
                        result = work(session)
                        session.flush()
                        savepoint.commit()
                        outcomes.append((True, result))
                        after_commit.extend(session.info.pop(AFTER_COMMIT, []))
                    except Exception as error:
                        savepoint.rollback()
                        session.info.pop(AFTER_COMMIT, None)  # its work was undone
                        outcomes.append((False, error))
                session.commit()
        except Exception as error:
            # The commit itself failed: nothing in the batch was stored.
            log.exception("group commit of %d operations failed", len(works))
            return [(False, error) for _ in works]
        for callback in after_commit:
            callback()
        return outcomes


AFTER_COMMIT = "after_commit_callbacks"


def call_after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once the work this session is doing is committed (and
    never if it is undone): for caches of facts that must be durable first."""
    session.info.setdefault(AFTER_COMMIT, []).append(callback)
