"""The notifications service's tables."""

from datetime import datetime

from sqlalchemy import JSON, Column, DateTime, Index, UniqueConstraint
from sqlmodel import AutoString, Field, SQLModel

from notifications_service.states import AttemptOutcome, DeliveryState
from shared.messaging_models import service_registry, utcnow

COORDINATORS = "coordinators"  # the recipient id of the coordinators' shared inbox


class NotificationsTable(SQLModel, registry=service_registry(inbox=True)):
    """The notifications service's tables, in its own metadata with its outbox and inbox."""


class AgencyRow(NotificationsTable, table=True):
    """The agency directory: agencies the catalog names, and partner agencies known to identity."""

    __tablename__ = "agency_directory"

    agency_id: str = Field(primary_key=True, max_length=64)
    country: str | None = Field(default=None, max_length=2)
    name: str | None = Field(default=None, max_length=300)
    source: str = Field(max_length=16)  # catalog | identity
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class NotificationRow(NotificationsTable, table=True):
    """One event for one recipient; never two."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("event_source", "event_id", "recipient", name="uq_notification_event_recipient"),
    )

    id: str = Field(primary_key=True, max_length=36)
    event_source: str = Field(max_length=300)
    event_id: str = Field(max_length=200)
    event_type: str = Field(max_length=200)
    subject: str | None = Field(default=None, max_length=200, index=True)
    recipient: str = Field(max_length=64, index=True)
    payload: dict = Field(sa_column=Column(JSON, nullable=False))
    event_time: datetime = Field(sa_type=DateTime(timezone=True))
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    acknowledged_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class WebhookEndpointRow(NotificationsTable, table=True):
    """An agency's webhook: where its notifications are pushed, signed with its secret."""

    __tablename__ = "webhook_endpoints"

    agency_id: str = Field(primary_key=True, max_length=64)
    url: str = Field(max_length=2000)
    # Event types the agency receives; empty means every type routed to it.
    event_types: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # Kept in clear: signing needs it (as receivers keep theirs to verify).
    secret: str = Field(max_length=100)
    # Secrets replaced by a rotation that still sign until they expire:
    # [{"secret": ..., "expires_at": ISO 8601}], newest first.
    previous_secrets: list[dict] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    enabled: bool = True
    disabled_reason: str | None = Field(default=None, max_length=300)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class DeliveryRow(NotificationsTable, table=True):
    """Pushing one notification to its agency's webhook, across attempts.

    `id` is the `webhook-id` header: the same on every attempt, so receivers
    can drop a repeat."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),)

    id: str = Field(primary_key=True, max_length=40)
    notification_id: str = Field(max_length=36, unique=True)
    agency_id: str = Field(max_length=64, index=True)
    event_type: str = Field(max_length=200)
    # Stored as its plain string (a VARCHAR, not a database enum type).
    state: DeliveryState = Field(sa_type=AutoString(length=16))
    attempts: int = 0
    # Failures since the schedule last started (a manual retry starts it again).
    schedule_step: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # Claimed by a dispatcher until then; a crashed one's claims run out.
    lease_until: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=500)
    last_attempt_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    delivered_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    dead_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    # The W3C trace context of the span that handled the event: every attempt continues it.
    traceparent: str | None = Field(default=None, max_length=55)
    tracestate: str | None = Field(default=None, max_length=512)


class DeliveryAttemptRow(NotificationsTable, table=True):
    __tablename__ = "webhook_delivery_attempts"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(max_length=40, index=True)
    attempt: int
    outcome: AttemptOutcome = Field(sa_type=AutoString(length=32))
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=500)
    duration_ms: float
    attempted_at: datetime = Field(sa_type=DateTime(timezone=True))
