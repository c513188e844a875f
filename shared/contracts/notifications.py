"""What the notifications service publishes: the outcome of every webhook
delivery attempt, and the notifications whose retry schedule ran out."""

from datetime import datetime
from typing import Literal

from pydantic import Field

from shared.contracts.catalog import _Contract

NOTIFICATIONS_SOURCE = "/caj-tracker/notifications"
DELIVERY_ATTEMPTED = "org.caj-tracker.notifications.delivery.attempted.v1"
DELIVERY_DEAD = "org.caj-tracker.notifications.delivery.dead.v1"

# delivered: 2xx. failed: another status, a timeout or no connection (retried
# on the schedule). endpoint_gone: 410, the endpoint is disabled. endpoint_disabled:
# the agency's endpoint was removed or disabled meanwhile. refused_address: the
# host resolved to a non-public address (retried: DNS can change).
AttemptOutcome = Literal["delivered", "failed", "endpoint_gone", "endpoint_disabled", "refused_address"]


class DeliveryAttempted(_Contract):
    """One webhook delivery attempt and how it ended (key: delivery id)."""

    delivery_id: str = Field(description="Also the webhook-id header, the same on every attempt")
    notification_id: str
    agency_id: str
    event_type: str = Field(description="The type of the event the notification is about")
    attempt: int = Field(ge=1)
    outcome: AttemptOutcome
    status_code: int | None = Field(description="The receiver's HTTP status; null when there was no response")
    error: str | None = Field(description="Why the attempt failed: timeout, connection error, status")
    duration_ms: float
    attempted_at: datetime
    next_attempt_at: datetime | None = Field(description="When the next attempt is due; null when none is")


class DeliveryDead(_Contract):
    """A notification's retry schedule is exhausted, or its endpoint is gone
    (key: delivery id). Coordinators and operators can retry it by hand."""

    delivery_id: str
    notification_id: str
    agency_id: str
    event_type: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    dead_at: datetime
