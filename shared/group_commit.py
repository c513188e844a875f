"""Group commit: concurrent write operations share one database commit.

A batch first runs without savepoints. If one operation fails, the batch is
rolled back and run again with a SAVEPOINT per operation, so the failing one
is undone alone and reports its own error; the others commit together. An
operation may therefore run twice: it must only touch the session (anything
else belongs in `call_after_commit`). A caller's
future resolves only after the commit, so an acknowledged write is durable,
and the commit costs one fsync however many requests it carries.
"""

import asyncio
import contextvars
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session

from shared.workers import SupervisedWorker

log = logging.getLogger(__name__)
T = TypeVar("T")

Work = Callable[[Session], Any]


class GroupCommitWriter:
    def __init__(self, engine: Engine, *, max_batch: int = 128) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Work, asyncio.Future]] | None = None
        self.worker = SupervisedWorker("group-commit", self._run)

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()

    @property
    def running(self) -> bool:
        return self.worker.running

    async def run(self, work: Callable[[Session], T]) -> T:
        """Run `work(session)` in a transaction shared with other writers;
        return its result once committed, or raise its error."""
        if self._queue is None:
            raise RuntimeError("the writer is not started")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        # The work runs on the writer's thread in the caller's context: its
        # logs keep the caller's request id and trace, and the events it
        # stages carry the caller's trace context (shared.tracing).
        context = contextvars.copy_context()
        await self._queue.put((lambda session: context.run(work, session), future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                outcomes = await asyncio.to_thread(self._commit_batch, [work for work, _ in batch])
            except BaseException as error:
                # The batch's callers must not wait forever for a writer that
                # is being restarted (they get its error) or stopped (their
                # outcome is unknown: cancelled).
                for _, future in batch:
                    if not future.done():
                        if isinstance(error, Exception):
                            future.set_exception(error)
                        else:
                            future.cancel()
                raise
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue  # the caller went away; its work is committed all the same
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _commit_batch(self, works: list[Work]) -> list[tuple[bool, Any]]:
        # Optimistic first: no savepoints, which cost two statements per work.
        # If any work fails, the whole transaction is rolled back and the batch
        # runs again with a savepoint per work, so the failure stays its own.
        if len(works) > 1:
            outcomes = self._try_without_savepoints(works)
            if outcomes is not None:
                return outcomes
        return self._run_with_savepoints(works)

    def _try_without_savepoints(self, works: list[Work]) -> list[tuple[bool, Any]] | None:
        results: list[tuple[bool, Any]] = []
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                for work in works:
                    results.append((True, work(session)))
                    session.flush()
            except Exception:
                session.rollback()
                return None
            try:
                session.commit()
            except Exception as error:
                log.exception("group commit of %d operations failed", len(works))
                return [(False, error) for _ in works]
        return results

    def _run_with_savepoints(self, works: list[Work]) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                for work in works:
                    callbacks = session.info.setdefault(AFTER_COMMIT, [])
                    registered = len(callbacks)
                    savepoint = session.begin_nested()
                    try:
                        result = work(session)
                        session.flush()
                        savepoint.commit()
                        outcomes.append((True, result))
                    except Exception as error:
                        savepoint.rollback()
                        del callbacks[registered:]  # its work was undone
                        outcomes.append((False, error))
                session.commit()
        except Exception as error:
            # The commit itself failed: nothing in the batch was stored.
            log.exception("group commit of %d operations failed", len(works))
            return [(False, error) for _ in works]
        return outcomes


AFTER_COMMIT = "after_commit_callbacks"


def call_after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once the work this session is doing is committed (and
    never if it is undone): for metrics, and caches of facts that must be
    durable first."""
    session.info.setdefault(AFTER_COMMIT, []).append(callback)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint was released: nothing is durable yet
    for callback in session.info.pop(AFTER_COMMIT, []):
        try:
            callback()
        except Exception:  # the commit stands; a callback must not undo its report
            log.exception("after-commit callback failed")


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint: GroupCommitWriter drops that work's callbacks itself
    session.info.pop(AFTER_COMMIT, None)
