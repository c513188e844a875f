"""The requests service's tables."""

from datetime import datetime

from sqlalchemy import JSON, Column, DateTime, Index, Text
from sqlmodel import Field, SQLModel

from shared.messaging_models import service_registry, utcnow


class RequestsTable(SQLModel, registry=service_registry(inbox=True)):
    """The requests service's tables, in its own metadata with its outbox and inbox."""


def _timestamp() -> DateTime:
    return DateTime(timezone=True)


class OfferRow(RequestsTable, table=True):
    """Read model of the catalog's commitments (from catalog.commitments)."""

    __tablename__ = "offers"

    commitment_id: str = Field(primary_key=True, max_length=100)
    plan_id: str = Field(max_length=64)
    section: str = Field(max_length=300)
    text: str = Field(sa_column=Column(Text, nullable=False))
    condition_type: str = Field(max_length=32)
    condition_text: str | None = Field(default=None, max_length=500)
    eligible_countries: list = Field(sa_column=Column(JSON, nullable=False))
    required_countries: list = Field(sa_column=Column(JSON, nullable=False))
    responsible_agencies: list = Field(sa_column=Column(JSON, nullable=False))
    revision: int
    # A tombstone marks the offer removed; its requests and history stay.
    removed: bool = Field(default=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=_timestamp())


class RequestRow(RequestsTable, table=True):
    __tablename__ = "requests"
    __table_args__ = (
        Index("ix_requests_country_status", "country", "status"),
        Index("ix_requests_status_since", "status", "status_since"),
    )

    id: str = Field(primary_key=True, max_length=36)
    commitment_id: str = Field(max_length=100, index=True)
    country: str = Field(max_length=2)
    agency_id: str = Field(max_length=64)
    title: str = Field(max_length=200)
    description: str = Field(sa_column=Column(Text, nullable=False))
    reference: str | None = Field(default=None, max_length=100)
    status: str = Field(max_length=32, index=True)
    created_by_key: str = Field(max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_type=_timestamp())
    updated_at: datetime = Field(default_factory=utcnow, sa_type=_timestamp())
    # When the request entered its current status: staleness counts from here.
    status_since: datetime = Field(default_factory=utcnow, sa_type=_timestamp())
    # The last staleness period announced for the current status (0: none);
    # a status change sets it back to 0.
    stale_period: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


class RequestHistoryRow(RequestsTable, table=True):
    __tablename__ = "request_history"

    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(max_length=36, index=True)
    at: datetime = Field(default_factory=utcnow, sa_type=_timestamp())
    actor_key_id: str = Field(max_length=16)
    actor_role: str = Field(max_length=16)
    actor_agency_id: str | None = Field(default=None, max_length=64)
    from_status: str | None = Field(default=None, max_length=32)
    to_status: str = Field(max_length=32)
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class IdempotencyRow(RequestsTable, table=True):
    """A successful POST, remembered per (key, Idempotency-Key) to replay it."""

    __tablename__ = "idempotency_keys"

    api_key_id: str = Field(primary_key=True, max_length=16)
    idempotency_key: str = Field(primary_key=True, max_length=200)
    body_sha256: str = Field(max_length=64)
    status_code: int
    response_body: str = Field(sa_column=Column(Text, nullable=False))
    resource_id: str = Field(max_length=36)
    created_at: datetime = Field(default_factory=utcnow, sa_type=_timestamp())


class OfferInterestRow(RequestsTable, table=True):
    """A country's registered interest in a joint-interest offer."""

    __tablename__ = "offer_interests"

    commitment_id: str = Field(primary_key=True, max_length=100)
    country: str = Field(primary_key=True, max_length=2)
    request_id: str = Field(max_length=36)
    registered_at: datetime = Field(default_factory=utcnow, sa_type=_timestamp())


class OfferActivationRow(RequestsTable, table=True):
    """An offer activated for a country ("*" when the condition names none)."""

    __tablename__ = "offer_activations"

    commitment_id: str = Field(primary_key=True, max_length=100)
    country: str = Field(primary_key=True, max_length=2)
    trigger: str = Field(max_length=32)
    trigger_id: str = Field(max_length=36)
    activated_at: datetime = Field(default_factory=utcnow, sa_type=_timestamp())


class OfferRecordRow(RequestsTable, table=True):
    """An agreement or a piece of evidence a coordinator recorded."""

    __tablename__ = "offer_records"

    id: str = Field(primary_key=True, max_length=36)
    commitment_id: str = Field(max_length=100, index=True)
    kind: str = Field(max_length=16)
    reference: str = Field(max_length=500)
    parties: list = Field(sa_column=Column(JSON, nullable=False))
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    recorded_by_key: str = Field(max_length=16)
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=_timestamp())
