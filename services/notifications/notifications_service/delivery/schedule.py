"""The retry schedule, as pure functions: where a delivery goes after an
attempt. No database and no I/O; the clock (`now`) and the jitter's random
source are passed in, so every case is a plain function call in the tests.

    pending --delivered--> delivered
    pending --failed / refused_address--> pending (next_attempt_at = now + delay),
                                          or dead once the schedule is exhausted
    pending --endpoint_gone / endpoint_disabled--> dead
"""

import email.utils
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from notifications_service.config import NotificationsSettings
from notifications_service.states import AttemptOutcome, DeliveryState

_ENDS_THE_DELIVERY = (AttemptOutcome.ENDPOINT_GONE, AttemptOutcome.ENDPOINT_DISABLED)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    delays: tuple[float, ...]  # after the 1st, 2nd, ... failure in a row; then dead
    jitter: float = 0.0  # each delay times a random factor in [1 - jitter, 1 + jitter]
    retry_after_max: float = 86400.0  # a receiver's Retry-After is honoured up to this

    @classmethod
    def from_settings(cls, settings: NotificationsSettings) -> "RetryPolicy":
        return cls(tuple(settings.webhook_retry_schedule_seconds), settings.webhook_retry_jitter,
                   settings.webhook_retry_after_max_seconds)


@dataclass(frozen=True, slots=True)
class NextState:
    """A delivery's columns after an attempt."""

    state: DeliveryState
    attempts: int
    schedule_step: int  # failures since the schedule last started
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    dead_at: datetime | None = None


_RANDOM = random.Random()


def retry_delay(schedule, failures: int, *, jitter: float, rng: random.Random = _RANDOM) -> float | None:
    """Seconds until the next attempt after `failures` failures in a row, or
    None when the schedule is exhausted."""
    if failures > len(schedule):
        return None
    base = schedule[failures - 1]
    return base * rng.uniform(1 - jitter, 1 + jitter) if jitter else base


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def next_state(*, attempts: int, schedule_step: int, outcome: AttemptOutcome, attempted_at: datetime,
               retry_after: float | None, now: datetime, policy: RetryPolicy, rng: random.Random) -> NextState:
    """Where a delivery claimed with `attempts` and `schedule_step` goes after
    an attempt made at `attempted_at` ended with `outcome`; `now` is when the
    outcome is recorded, from which the next attempt is timed."""
    attempts += 1
    if outcome == AttemptOutcome.DELIVERED:
        return NextState(DeliveryState.DELIVERED, attempts, schedule_step, delivered_at=attempted_at)
    failures = schedule_step + 1
    if outcome in _ENDS_THE_DELIVERY:
        return NextState(DeliveryState.DEAD, attempts, failures, dead_at=attempted_at)
    delay = retry_delay(policy.delays, failures, jitter=policy.jitter, rng=rng)
    if delay is None:
        return NextState(DeliveryState.DEAD, attempts, failures, dead_at=attempted_at)
    if retry_after is not None:
        # Never sooner than the receiver asked, never later than the cap.
        delay = min(max(delay, retry_after), policy.retry_after_max)
    return NextState(DeliveryState.PENDING, attempts, failures, next_attempt_at=now + timedelta(seconds=delay))
