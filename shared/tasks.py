"""Small helpers for the background tasks every service runs."""

import asyncio
import logging

log = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel a background task and wait until it has really stopped. An
    error it had already ended with is logged here, never swallowed."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():
            raise  # the caller itself is being cancelled
    except Exception:
        log.exception("background task %s had failed", task.get_name())
