"""One way to wait between attempts: capped exponential backoff with jitter.

Every loop that retries (the relay, consumers, dead-letter publishing,
connecting to Kafka, creating topics, loading the catalog, supervised
workers) takes its delays from a `Backoff`, so no loop can grow its delay
without bound, overflow, or retry in lock-step with its replicas.
"""

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# 2**64 is far past any cap: the exponent stops growing there, so the delay
# is computed in constant time and never overflows, however long it fails.
_MAX_EXPONENT = 64


@dataclass
class Backoff:
    """Delays `first * factor**n`, capped at `cap`, each spread by ±`jitter`
    (a fraction) so that replicas that failed together do not retry together."""

    first: float = 0.2
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random, repr=False)
    failures: int = 0

    def __post_init__(self) -> None:
        if self.first <= 0 or self.cap < self.first or self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError(f"not a usable backoff: {self!r}")

    def next_delay(self) -> float:
        """Count one more failure; the seconds to wait before the next attempt."""
        exponent = min(self.failures, _MAX_EXPONENT)
        self.failures += 1
        delay = min(self.first * self.factor**exponent, self.cap)
        if self.jitter:
            delay *= self.rng.uniform(1 - self.jitter, 1 + self.jitter)
        return delay

    def reset(self) -> None:
        """An attempt succeeded: the next failure waits `first` again."""
        self.failures = 0

    async def sleep(self) -> float:
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay


async def retry(attempt: Callable[[], Awaitable[T]], *, what: str, backoff: Backoff | None = None) -> T:
    """Run `attempt` until it succeeds, waiting `backoff`'s delays between
    failures (Kafka may come up after the service); its result."""
    backoff = backoff or Backoff(first=0.5, cap=10.0)
    while True:
        try:
            return await attempt()
        except Exception as error:
            delay = backoff.next_delay()
            log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(error).__name__, error, delay)
            await asyncio.sleep(delay)
