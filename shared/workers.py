"""Supervised background workers: none of them can die silently.

Each long-running loop of a service (the outbox relay, each consumer, the
group-commit writer, the key store, the webhook dispatcher) runs as a
`SupervisedWorker`. If its loop ends with an error, the error is logged,
counted in `caj_worker_restarts_total`, and the loop is started again after a
capped backoff. While it is down, `running` is False and the service's
/readyz answers 503 naming it. A loop that returns normally has finished its
job and is not restarted.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from shared import metrics
from shared.retry import Backoff
from shared.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# A run that lasted this long was healthy: its next failure starts the
# backoff from the beginning again.
HEALTHY_RUN_SECONDS = 60.0


class SupervisedWorker:
    def __init__(self, name: str, run: Callable[[], Awaitable[None]], *, backoff: Backoff | None = None,
                 healthy_after: float = HEALTHY_RUN_SECONDS) -> None:
        self.name = name
        self._run = run
        self.backoff = backoff or Backoff(first=0.5, cap=30.0)
        self.healthy_after = healthy_after
        self.restarts = 0
        self.last_error: str | None = None
        self.finished = False
        self._task: asyncio.Task | None = None
        self._up = False

    def start(self) -> None:
        if self._task is not None and not self._task.done():
            raise RuntimeError(f"worker {self.name} is already started")
        self._task = asyncio.create_task(self._supervise(), name=f"worker:{self.name}")

    async def stop(self) -> None:
        """Cancel the loop (or its wait to restart) and wait until it is gone."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        self._up = False

    @property
    def started(self) -> bool:
        return self._task is not None

    @property
    def running(self) -> bool:
        """Started, and its loop is up now (not crashed and waiting to restart)."""
        return self._task is not None and self._up and not self._task.done()

    @property
    def status(self) -> str:
        if self._task is None:
            return "not started"
        if self.finished:
            return "finished"
        if self._up:
            return "running"
        return f"restarting after: {self.last_error}"

    async def _supervise(self) -> None:
        while True:
            self._up = True
            began = time.monotonic()
            try:
                await self._run()
            except asyncio.CancelledError:
                self._up = False
                raise
            except Exception as error:  # nothing may end a worker unseen
                self._up = False
                if time.monotonic() - began >= self.healthy_after:
                    self.backoff.reset()
                delay = self.backoff.next_delay()
                self.restarts += 1
                self.last_error = f"{type(error).__name__}: {error}"[:500]
                metrics.WORKER_RESTARTS.labels(self.name).inc()
                log.error("worker %s stopped unexpectedly; restarting in %.1fs", self.name, delay, exc_info=error)
                await asyncio.sleep(delay)
                continue
            self._up = False
            self.finished = True
            return
