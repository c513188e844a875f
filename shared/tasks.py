"""Small helpers for the background tasks every service runs."""

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel a background task and wait until it has really stopped; its
    failure, if it had one, was logged where it happened."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass


async def retry_until_done(attempt: Callable[[], Awaitable[None]], *, what: str, first_delay: float = 1.0,
                           max_delay: float = 10.0) -> None:
    """Run `attempt` until it succeeds, backing off between failures: Kafka may
    come up after the service."""
    delay = first_delay
    while True:
        try:
            await attempt()
            return
        except Exception as error:
            log.warning("%s failed (%s); retrying in %.1fs", what, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
