"""The retry schedule as plain function calls: a fixed clock, a seeded
random source, no database, no broker, no HTTP."""

import random
import typing
from datetime import UTC, datetime, timedelta

import pytest

from notifications_service.config import NotificationsSettings
from notifications_service.delivery.attempt import Claimed, judge_answer, send_attempt
from notifications_service.delivery.schedule import (
    NextState,
    RetryPolicy,
    next_state,
    parse_retry_after,
    retry_delay,
)
from notifications_service.states import AttemptOutcome, DeliveryState
from notifications_service.webhooks import AddressGuard
from shared.contracts import notifications as contract

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
ATTEMPTED = NOW - timedelta(seconds=3)
POLICY = RetryPolicy(delays=(1.0, 10.0, 100.0), jitter=0.0, retry_after_max=3600.0)


def after(outcome: AttemptOutcome, *, attempts: int = 0, schedule_step: int = 0, retry_after: float | None = None,
          policy: RetryPolicy = POLICY, rng: random.Random | None = None) -> NextState:
    return next_state(attempts=attempts, schedule_step=schedule_step, outcome=outcome, attempted_at=ATTEMPTED,
                      retry_after=retry_after, now=NOW, policy=policy, rng=rng or random.Random(1))


def test_the_schedule_runs_out_after_its_last_delay():
    schedule = [1.0, 10.0, 100.0]
    assert [retry_delay(schedule, n, jitter=0) for n in (1, 2, 3)] == schedule
    assert retry_delay(schedule, 4, jitter=0) is None
    assert retry_delay([], 1, jitter=0) is None


def test_a_delivered_attempt_ends_the_delivery_and_keeps_its_schedule_step():
    assert after(AttemptOutcome.DELIVERED, attempts=2, schedule_step=2) == NextState(
        DeliveryState.DELIVERED, attempts=3, schedule_step=2, delivered_at=ATTEMPTED)


def test_failures_walk_the_schedule_then_the_delivery_is_dead():
    attempts, step, seen = 0, 0, []
    while True:
        state = after(AttemptOutcome.FAILED, attempts=attempts, schedule_step=step)
        seen.append(state)
        if state.state != DeliveryState.PENDING:
            break
        attempts, step = state.attempts, state.schedule_step
    assert [s.next_attempt_at for s in seen[:-1]] == [NOW + timedelta(seconds=d) for d in POLICY.delays]
    assert seen[-1] == NextState(DeliveryState.DEAD, attempts=4, schedule_step=4, dead_at=ATTEMPTED)
    assert len(seen) == len(POLICY.delays) + 1


def test_the_next_attempt_is_timed_from_the_recording_clock():
    """`now`, not the attempt's start: a slow attempt does not shorten the wait."""
    state = after(AttemptOutcome.FAILED)
    assert state.next_attempt_at == NOW + timedelta(seconds=1) != ATTEMPTED + timedelta(seconds=1)


def test_a_manual_retry_starts_the_schedule_again_but_keeps_counting_attempts():
    # retry_delivery sets schedule_step back to 0; attempts go on.
    state = after(AttemptOutcome.FAILED, attempts=4, schedule_step=0)
    assert (state.state, state.attempts, state.schedule_step) == (DeliveryState.PENDING, 5, 1)
    assert state.next_attempt_at == NOW + timedelta(seconds=1)


def test_a_refused_address_is_retried_like_a_failure():
    """DNS can change: a host that is not public now may be later."""
    assert after(AttemptOutcome.REFUSED_ADDRESS) == after(AttemptOutcome.FAILED)


@pytest.mark.parametrize("outcome", [AttemptOutcome.ENDPOINT_GONE, AttemptOutcome.ENDPOINT_DISABLED])
def test_a_gone_or_disabled_endpoint_kills_the_delivery_with_schedule_left(outcome):
    assert after(outcome, attempts=0, schedule_step=0) == NextState(
        DeliveryState.DEAD, attempts=1, schedule_step=1, dead_at=ATTEMPTED)


def test_retry_after_is_honoured_when_longer_than_the_schedule():
    assert after(AttemptOutcome.FAILED, retry_after=120.0).next_attempt_at == NOW + timedelta(seconds=120)


def test_retry_after_never_brings_the_next_attempt_forward():
    state = after(AttemptOutcome.FAILED, schedule_step=2, retry_after=5.0)
    assert state.next_attempt_at == NOW + timedelta(seconds=100)


def test_retry_after_is_capped():
    state = after(AttemptOutcome.FAILED, retry_after=10 * 86400.0)
    assert state.next_attempt_at == NOW + timedelta(seconds=POLICY.retry_after_max)


def test_retry_after_does_not_revive_an_exhausted_schedule():
    state = after(AttemptOutcome.FAILED, attempts=3, schedule_step=3, retry_after=60.0)
    assert state.state == DeliveryState.DEAD and state.next_attempt_at is None


def test_jitter_spreads_delays_within_its_bounds():
    rng = random.Random(7)
    delays = [retry_delay([100.0], 1, jitter=0.2, rng=rng) for _ in range(200)]
    assert all(80.0 <= d <= 120.0 for d in delays)
    assert max(delays) - min(delays) > 20, "not spread"


def test_the_next_attempt_is_jittered_within_bounds_by_the_given_random_source():
    policy = RetryPolicy(delays=(100.0,), jitter=0.2)
    waits = [(after(AttemptOutcome.FAILED, policy=policy, rng=random.Random(seed)).next_attempt_at - NOW)
             .total_seconds() for seed in range(100)]
    assert all(80.0 <= wait <= 120.0 for wait in waits)
    assert max(waits) - min(waits) > 20, "not spread"
    same_seed = [after(AttemptOutcome.FAILED, policy=policy, rng=random.Random(3)) for _ in range(2)]
    assert same_seed[0] == same_seed[1], "the random source is the only source of chance"


def test_the_policy_comes_from_the_settings():
    settings = NotificationsSettings(webhook_retry_schedule_seconds=[2, 4], webhook_retry_jitter=0.1,
                                     webhook_retry_after_max_seconds=60)
    assert RetryPolicy.from_settings(settings) == RetryPolicy(delays=(2.0, 4.0), jitter=0.1, retry_after_max=60.0)


def test_retry_after_in_seconds_or_as_a_date():
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120", now=now) == 120.0
    assert parse_retry_after("Sat, 28 Nov 2026 12:01:30 GMT", now=now) == 90.0
    assert parse_retry_after("Sat, 28 Nov 2026 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None, now=now) is None


@pytest.mark.parametrize(("status", "retry_after", "judged"), [
    (200, None, (AttemptOutcome.DELIVERED, None, None)),
    (204, "30", (AttemptOutcome.DELIVERED, None, None)),
    (410, "30", (AttemptOutcome.ENDPOINT_GONE, "the receiver answered 410 Gone", None)),
    (429, "30", (AttemptOutcome.FAILED, "HTTP 429", 30.0)),
    (503, "Sat, 28 Nov 2026 12:01:00 GMT", (AttemptOutcome.FAILED, "HTTP 503", 60.0)),
    (500, "30", (AttemptOutcome.FAILED, "HTTP 500", None)),  # Retry-After counts on 429 and 503 only
    (307, None, (AttemptOutcome.FAILED, "HTTP 307", None)),
])
def test_how_an_answer_is_judged(status, retry_after, judged):
    assert judge_answer(status, retry_after, now=NOW) == judged


class _TimingOutClient:
    """Stands in for the aiohttp client: every POST runs out of time."""

    class timeout:  # noqa: N801 (aiohttp's attribute)
        total = 10.0

    def post(self, *_args, **_kwargs):
        class Request:
            async def __aenter__(self):
                raise TimeoutError

            async def __aexit__(self, *_exc):
                return False

        return Request()


async def test_a_timeout_counts_as_a_failure_and_is_retried_on_the_schedule():
    claimed = Claimed(delivery_id="msg_timeout", notification_id="n-1", agency_id="tj-timeout",
                      event_type="t.v1", event_time=NOW, attempts=0, schedule_step=0, body=b"{}",
                      url="http://127.0.0.1:9/hook", secrets_in_use=("whsec_" + "A" * 43 + "=",))
    outcome = await send_attempt(_TimingOutClient(), AddressGuard(allow_private=True), claimed, clock=lambda: NOW)
    assert (outcome.outcome, outcome.status_code, outcome.attempted_at) == (AttemptOutcome.FAILED, None, NOW)
    assert outcome.error == "timeout after 10 s"
    state = after(outcome.outcome, retry_after=outcome.retry_after)
    assert state.state == DeliveryState.PENDING and state.next_attempt_at == NOW + timedelta(seconds=1)


def test_the_states_and_outcomes_are_the_strings_stored_and_published():
    assert set(AttemptOutcome) == set(typing.get_args(contract.AttemptOutcome))
    assert [str(state) for state in DeliveryState] == ["pending", "delivered", "dead"]
    assert f"{DeliveryState.DEAD}" == "dead" and AttemptOutcome.ENDPOINT_GONE == "endpoint_gone"
