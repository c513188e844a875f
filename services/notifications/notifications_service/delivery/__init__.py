"""Pushing notifications to webhooks, with retries whose state lives in the
database.

A delivery row is due when it is `pending` and its `next_attempt_at` has
come. The dispatcher claims due rows for a while (`lease_until`), sends each
one, and records the outcome, the delivery's new state and the outcome events
(`notifications.deliveries`, and `notifications.dead-letter` when it is dead)
in one transaction, through the outbox. A restart therefore resumes every
schedule where it stood. Delivery is at least once: an attempt the receiver
accepted just before a crash, before its outcome was recorded, is sent again
after the lease runs out, with the same `webhook-id`, so receivers can drop it.

    dispatcher.py   the concurrency: a claim loop run as the supervised worker
                    "webhook-dispatcher", send slots, batched recording, stop
        struggling.py   per-agency cap on attempts to a receiver that fails or is slow
        statements.py   the SQL: claim, load, release, and recording outcomes as
                        rows and events (one statement per kind of row per batch)
            schedule.py     pure: an attempt's outcome -> the delivery's next state
        attempt.py      one HTTP attempt -> an Outcome (never an exception)
"""

from notifications_service.delivery.attempt import Claimed, Outcome, judge_answer, send_attempt, webhook_client
from notifications_service.delivery.dispatcher import Dispatcher
from notifications_service.delivery.schedule import NextState, RetryPolicy, next_state, parse_retry_after, retry_delay
from notifications_service.delivery.struggling import STRUGGLE_MEMORY_SECONDS, StrugglingReceivers

__all__ = [
    "STRUGGLE_MEMORY_SECONDS", "Claimed", "Dispatcher", "NextState", "Outcome", "RetryPolicy", "StrugglingReceivers",
    "judge_answer", "next_state", "parse_retry_after", "retry_delay", "send_attempt", "webhook_client",
]
