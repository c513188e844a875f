"""Tables every service has for reliable messaging: the outbox and the inbox.

They are mapped once, here, in a registry of their own; each service's
registry (`service_registry`) holds copies of them beside its own tables, so
its migrations and its metadata agree without sharing table names with
other services."""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator
from sqlalchemy import BigInteger, Column, DateTime, Index, Text
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from shared.db import table_of


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; they were stored as UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# For timestamps in API answers: always with a zone (RFC 3339 date-time),
# whichever database the value came from.
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


class MessagingTable(SQLModel, registry=registry()):
    """Maps the messaging tables; no service's metadata is this one."""


class OutboxMessage(MessagingTable, table=True):
    """An event waiting to be published, written in the same transaction as its cause."""

    __tablename__ = "outbox_messages"
    __table_args__ = (Index("ix_outbox_messages_unpublished", "published_at", "id"),)

    # Monotonic: the relay publishes in this order, which keeps per-key order.
    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=64, unique=True)
    topic: str = Field(max_length=200)
    message_key: str | None = Field(default=None, max_length=200)
    event_type: str = Field(max_length=200)
    # The whole CloudEvent as structured JSON; `data` null means tombstone.
    envelope: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    published_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    attempts: int = Field(default=0)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Set when the broker kept refusing the row: it is no longer pending, and
    # `last_error` says why (`caj outbox failed` lists such rows).
    set_aside_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class ProcessedEvent(MessagingTable, table=True):
    """The inbox: an event id here means its effects are already committed."""

    __tablename__ = "processed_events"

    consumer_group: str = Field(primary_key=True, max_length=200)
    event_source: str = Field(primary_key=True, max_length=300)
    event_id: str = Field(primary_key=True, max_length=200)
    topic: str = Field(max_length=200)
    partition: int
    offset: int = Field(sa_type=BigInteger)
    processed_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


def service_registry(*, inbox: bool) -> registry:
    """A registry for one service's tables, holding the outbox too, and the
    inbox when the service consumes events."""
    service = registry()
    table_of(OutboxMessage).to_metadata(service.metadata)
    if inbox:
        table_of(ProcessedEvent).to_metadata(service.metadata)
    return service
