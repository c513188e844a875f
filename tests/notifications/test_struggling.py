"""The per-agency limit for struggling receivers, on a clock the test moves."""

from collections import Counter

from notifications_service.delivery.struggling import STRUGGLE_MEMORY_SECONDS, StrugglingReceivers
from notifications_service.states import AttemptOutcome

CAP = 4
SLOW_MS = 5000.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def receivers() -> tuple[StrugglingReceivers, Clock]:
    clock = Clock()
    return StrugglingReceivers(CAP, slow_after_ms=SLOW_MS, clock=clock), clock


def test_a_failure_limits_the_agency_to_the_cap_less_what_is_already_claimed():
    struggling, _ = receivers()
    assert struggling.rooms(Counter()) == {}
    struggling.note("kz-broken", AttemptOutcome.FAILED, 10.0)
    assert "kz-broken" in struggling
    assert struggling.rooms(Counter()) == {"kz-broken": CAP}
    assert struggling.rooms(Counter({"kz-broken": 3, "kg-healthy": 50})) == {"kz-broken": 1}
    assert struggling.rooms(Counter({"kz-broken": CAP + 2})) == {"kz-broken": 0}


def test_rooms_are_per_agency():
    struggling, _ = receivers()
    struggling.note("kz-broken", AttemptOutcome.FAILED, 10.0)
    struggling.note("tj-slow", AttemptOutcome.DELIVERED, SLOW_MS + 1)
    assert struggling.rooms(Counter({"tj-slow": 1})) == {"kz-broken": CAP, "tj-slow": CAP - 1}


def test_a_slow_success_marks_a_receiver_and_a_quick_one_clears_it():
    struggling, _ = receivers()
    struggling.note("tj-slow", AttemptOutcome.DELIVERED, SLOW_MS + 1)
    assert "tj-slow" in struggling
    struggling.note("tj-slow", AttemptOutcome.DELIVERED, SLOW_MS - 1)
    assert "tj-slow" not in struggling
    assert struggling.rooms(Counter()) == {}


def test_outcomes_that_never_reached_the_receiver_change_nothing():
    struggling, _ = receivers()
    for outcome in (AttemptOutcome.ENDPOINT_DISABLED, AttemptOutcome.REFUSED_ADDRESS, AttemptOutcome.ENDPOINT_GONE):
        struggling.note("kz-quiet", outcome, SLOW_MS * 10)
    assert "kz-quiet" not in struggling
    struggling.note("kz-broken", AttemptOutcome.FAILED, 10.0)
    struggling.note("kz-broken", AttemptOutcome.REFUSED_ADDRESS, 1.0)
    assert "kz-broken" in struggling


def test_a_quiet_agency_is_forgotten_after_the_memory_once_nothing_of_it_is_claimed():
    struggling, clock = receivers()
    struggling.note("kz-broken", AttemptOutcome.FAILED, 10.0)
    clock.now += STRUGGLE_MEMORY_SECONDS - 1
    assert struggling.rooms(Counter()) == {"kz-broken": CAP}, "remembered for the whole memory"
    clock.now += 2
    assert struggling.rooms(Counter({"kz-broken": 1})) == {"kz-broken": CAP - 1}, "not while it has claims"
    assert struggling.rooms(Counter()) == {}
    assert "kz-broken" not in struggling


def test_a_new_failure_starts_the_memory_again():
    struggling, clock = receivers()
    struggling.note("kz-broken", AttemptOutcome.FAILED, 10.0)
    clock.now += STRUGGLE_MEMORY_SECONDS - 10
    struggling.note("kz-broken", AttemptOutcome.FAILED, 10.0)
    clock.now += 20
    assert struggling.rooms(Counter()) == {"kz-broken": CAP}
