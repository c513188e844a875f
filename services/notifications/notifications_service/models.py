"""The notifications service's tables."""

from datetime import datetime

from sqlalchemy import JSON, Column, DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel

from shared.messaging_models import utcnow

COORDINATORS = "coordinators"  # the recipient id of the coordinators' shared inbox


class AgencyRow(SQLModel, table=True):
    """The agency directory: agencies the catalog names, and partner agencies known to identity."""

    __tablename__ = "agency_directory"  # not "agencies": the catalog has that table in the shared SQLModel metadata

    agency_id: str = Field(primary_key=True, max_length=64)
    country: str | None = Field(default=None, max_length=2)
    name: str | None = Field(default=None, max_length=300)
    source: str = Field(max_length=16)  # catalog | identity
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class NotificationRow(SQLModel, table=True):
    """One event for one recipient; never two."""

    __tablename__ = "notifications"
    __table_args__ = (UniqueConstraint("event_source", "event_id", "recipient", name="uq_notification_event_recipient"),)

    id: str = Field(primary_key=True, max_length=36)
    event_source: str = Field(max_length=300)
    event_id: str = Field(max_length=200)
    event_type: str = Field(max_length=200)
    subject: str | None = Field(default=None, max_length=200)
    recipient: str = Field(max_length=64, index=True)
    payload: dict = Field(sa_column=Column(JSON, nullable=False))
    event_time: datetime = Field(sa_type=DateTime(timezone=True))
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    acknowledged_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
