"""The catalog's tables. Commitments are stored in their published form (a
JSON document) beside the columns queries and change detection need."""

import datetime as dt
from datetime import date, datetime

from sqlalchemy import JSON, Column, DateTime, ForeignKey, Index, Integer, String, Text
from sqlmodel import Field, SQLModel

from shared.messaging_models import service_registry, utcnow


class CatalogTable(SQLModel, registry=service_registry(inbox=True)):
    """The catalog's tables, in its own metadata with its outbox, and its inbox
    (it consumes requests.events into CommitmentActivityRow)."""


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
    # The current progress the latest published record carries (CurrentProgress
    # as JSON); None until a record with progress has been published.
    progress: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class ProgressReportRow(CatalogTable, table=True):
    """One progress report. Append-only: never updated or deleted; a
    correction is a new row that supersedes an earlier one. No foreign key to
    the commitment: the history outlives a commitment removed from the plans."""

    __tablename__ = "progress_reports"

    # Insertion order, the last tie-break between reports.
    seq: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    id: str = Field(max_length=36, unique=True, index=True)
    commitment_id: str = Field(max_length=100, index=True)
    status: str = Field(max_length=16)
    as_of: date
    summary: str = Field(sa_column=Column(Text, nullable=False))
    evidence: list = Field(sa_column=Column(JSON, nullable=False))
    figures: dict = Field(sa_column=Column(JSON, nullable=False))
    # Unique: a report is corrected at most once, so corrections form a chain.
    supersedes: str | None = Field(default=None, max_length=36, unique=True, index=True)
    reporter_key_id: str = Field(max_length=16)
    reporter_role: str = Field(max_length=16)
    reporter_agency_id: str | None = Field(default=None, max_length=64)
    reported_at: datetime = Field(sa_type=DateTime(timezone=True))


class ReviewMeetingRow(CatalogTable, table=True):
    """A meeting that reviews a plan's progress: recorded by a coordinator, or
    one of the Dialogue's real meetings loaded with the plan (with its source)."""

    __tablename__ = "review_meetings"
    __table_args__ = (Index("ix_review_meetings_plan_date", "plan_id", "date"),)

    id: str = Field(primary_key=True, max_length=100)
    plan_id: str = Field(sa_column=Column(String(64), ForeignKey("plans.id", ondelete="CASCADE"), nullable=False))
    title: str = Field(max_length=300)
    date: dt.date
    place: str = Field(max_length=200)
    kind: str | None = Field(default=None, max_length=32)
    source_url: str | None = Field(default=None, max_length=2000)
    recorded_by_key_id: str | None = Field(default=None, max_length=16)
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class CommitmentActivityRow(CatalogTable, table=True):
    """The read model of requests.events: a request submitted or moved, an
    offer activated, per commitment and when. Written once per event (the
    inbox keeps replays out)."""

    __tablename__ = "commitment_activity"

    seq: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True))
    commitment_id: str = Field(max_length=100, index=True)
    kind: str = Field(max_length=32)  # request_submitted | request_status_changed | offer_activated
    request_id: str | None = Field(default=None, max_length=64)
    status: str | None = Field(default=None, max_length=32)  # the request's status after the event
    countries: list = Field(sa_column=Column(JSON, nullable=False))
    occurred_at: datetime = Field(sa_type=DateTime(timezone=True))


class CommitmentStalenessRow(CatalogTable, table=True):
    """The staleness period last announced for a commitment, counted from
    `since` (its last report, or its adoption or activation): the row the
    periodic check claims a period on, so that a period is announced once."""

    __tablename__ = "commitment_staleness"

    commitment_id: str = Field(primary_key=True, max_length=100)
    since: datetime = Field(sa_type=DateTime(timezone=True))
    period: int
