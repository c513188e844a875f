"""Staleness periods, shared by the requests' and the commitments' checks.

Period n (n >= 1) of something unchanged since `since` covers
[since + n * stale_after, since + (n + 1) * stale_after); each period is
announced once."""

from datetime import datetime, timedelta


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
