"""The catalog's tables. Commitments are stored in their published form (a
JSON document) beside the columns queries and change detection need."""

from datetime import date, datetime

from sqlalchemy import JSON, Column, DateTime, ForeignKey, String, Text
from sqlmodel import Field, SQLModel

from shared.messaging_models import service_registry, utcnow


class CatalogTable(SQLModel, registry=service_registry(inbox=False)):
    """The catalog's tables, in its own metadata with its outbox (it consumes nothing)."""


class PlanRow(CatalogTable, table=True):
    __tablename__ = "plans"

    id: str = Field(primary_key=True, max_length=64)
    title: str = Field(max_length=500)
    adopted: date
    place: str | None = Field(default=None, max_length=200)
    source_document: str = Field(max_length=200)
    source_sha256: str = Field(max_length=64)
    source_text: str = Field(sa_column=Column(Text, nullable=False))
    pillars: dict = Field(sa_column=Column(JSON, nullable=False))
    content_hash: str = Field(max_length=64)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class AgencyRow(CatalogTable, table=True):
    __tablename__ = "agencies"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=300)
    country: str | None = Field(default=None, max_length=2)
    kind: str = Field(max_length=64)
    aliases: list = Field(sa_column=Column(JSON, nullable=False))


class CommitmentRow(CatalogTable, table=True):
    __tablename__ = "commitments"

    id: str = Field(primary_key=True, max_length=100)
    plan_id: str = Field(
        sa_column=Column(String(64), ForeignKey("plans.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    pillar: int
    section_code: str = Field(max_length=16)
    kind: str = Field(max_length=32)
    condition_type: str = Field(max_length=32)
    document: dict = Field(sa_column=Column(JSON, nullable=False))
    # sha256 of the canonical JSON of `document`: a change means a new revision.
    content_hash: str = Field(max_length=64)
    revision: int = Field(default=1)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
