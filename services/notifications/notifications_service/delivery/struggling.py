"""Which receivers are struggling, and how many more of their deliveries one
dispatcher may claim now.

A receiver whose latest attempt failed or was slow gets at most `cap`
attempts at once (`NOTIFICATIONS_DELIVERY_CONCURRENCY_STRUGGLING_ENDPOINT`),
so that one broken receiver cannot hold every send slot. A quick success
clears it; so does STRUGGLE_MEMORY_SECONDS without a failure once none of
its deliveries is claimed.

The cap holds per replica: each dispatcher keeps its own view, so with N
replicas a struggling receiver may get up to N x cap attempts at once.
"""

import time
from collections.abc import Callable, Mapping

from notifications_service.states import AttemptOutcome

# A receiver that failed is held to a few slots until it answers quickly, or
# for this long after its last failure once none of its deliveries is claimed.
STRUGGLE_MEMORY_SECONDS = 600.0


class StrugglingReceivers:
    def __init__(self, cap: int, *, slow_after_ms: float, memory_seconds: float = STRUGGLE_MEMORY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cap = cap
        self.slow_after_ms = slow_after_ms
        self.memory_seconds = memory_seconds
        self._clock = clock
        self._since: dict[str, float] = {}  # agency -> when it last failed or was slow

    def __contains__(self, agency_id: str) -> bool:
        return agency_id in self._since

    def note(self, agency_id: str, outcome: AttemptOutcome, duration_ms: float) -> None:
        """Failures and slow answers mark a receiver as struggling; a quick
        success clears it. (Other outcomes never reached the receiver.)"""
        if outcome == AttemptOutcome.FAILED or (
                outcome == AttemptOutcome.DELIVERED and duration_ms > self.slow_after_ms):
            self._since[agency_id] = self._clock()
        elif outcome == AttemptOutcome.DELIVERED:
            self._since.pop(agency_id, None)

    def rooms(self, unsent_by_agency: Mapping[str, int]) -> dict[str, int]:
        """Struggling agencies and how many more of their deliveries may be
        claimed now, given how many are claimed and not yet sent. An agency
        quiet for `memory_seconds`, with nothing claimed, is forgotten."""
        if not self._since:
            return {}
        forget_before = self._clock() - self.memory_seconds
        for agency, since in list(self._since.items()):
            if since < forget_before and not unsent_by_agency.get(agency, 0):
                del self._since[agency]
        return {agency: max(self.cap - unsent_by_agency.get(agency, 0), 0) for agency in sorted(self._since)}
