"""The words a webhook delivery is described with: its state, and how an
attempt ended. StrEnums, so they are stored, listed, published and counted
as the same plain strings as always (`DeliveryState.DEAD == "dead"`)."""

from enum import StrEnum


class DeliveryState(StrEnum):
    PENDING = "pending"  # due at next_attempt_at (the retry queue once it has failed)
    DELIVERED = "delivered"  # a 2xx came back
    DEAD = "dead"  # schedule exhausted, or the endpoint is gone or disabled; retried only by hand


class AttemptOutcome(StrEnum):
    """As `shared.contracts.notifications.AttemptOutcome` publishes them."""

    DELIVERED = "delivered"  # 2xx
    FAILED = "failed"  # another status, a timeout, no connection: retried on the schedule
    ENDPOINT_GONE = "endpoint_gone"  # 410: the endpoint is disabled, the delivery dead
    ENDPOINT_DISABLED = "endpoint_disabled"  # no enabled endpoint any more: dead
    REFUSED_ADDRESS = "refused_address"  # the host is not public now: retried (DNS can change)
