"""Bring the database in line with the configured plan files, and publish
exactly what changed: new and changed commitments as their full state, removed
ones as tombstones, all through the outbox in the same transaction.

Each published state carries the commitment's current progress (from its
reports, else as its text reads). A commitment whose last record was
published before progress was tracked is published once more to carry it."""

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from catalog_service.models import AgencyRow, CommitmentRow, PlanRow
from catalog_service.plan_files import LoadedPlan
from catalog_service.progress import current_progress, plan_text_progress
from catalog_service.snapshot import reports_by_commitment
from shared.contracts.catalog import (
    CATALOG_SOURCE,
    COMMITMENT_PUBLISHED,
    COMMITMENT_REMOVED,
    CommitmentDocument,
    CommitmentPublished,
)
from shared.db import is_sqlite
from shared.messaging_models import utcnow
from shared.outbox import NewEvent, stage_events
from shared.topics import CATALOG_COMMITMENTS

log = logging.getLogger(__name__)
_SYNC_LOCK_ID = 4_206_0001


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    # Unchanged, published again only to carry their progress.
    republished: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def published(self) -> int:
        return len(self.created) + len(self.updated) + len(self.republished) + len(self.removed)


def content_hash(value: object) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def sync_plans(engine: Engine, plans: list[LoadedPlan], clock: Callable[[], datetime] = utcnow) -> SyncReport:
    report = SyncReport()
    now = clock()
    with Session(engine) as session:
        stored_rows = select(CommitmentRow)
        if not is_sqlite(str(engine.url)):
            # Replicas starting together must not both publish the same change.
            session.execute(text(f"SELECT pg_advisory_xact_lock({_SYNC_LOCK_ID})"))
            # Nor may a report taken meanwhile lose its revision to this one.
            stored_rows = stored_rows.with_for_update()
        _sync_agencies(session, plans)
        stored = {row.id: row for row in session.exec(stored_rows).all()}
        reports = reports_by_commitment(session)
        adopted = {plan.header.id: plan.header.adopted for plan in plans}
        wanted: dict[str, CommitmentDocument] = {}
        for plan in plans:
            _upsert_plan(session, plan, now)
            for document in plan.commitments:
                if document.id in wanted:
                    raise ValueError(f"commitment id {document.id} appears in two plans")
                wanted[document.id] = document
        session.flush()

        changes: list[NewEvent] = []
        for commitment_id, document in wanted.items():
            as_json = document.model_dump(mode="json")
            digest = content_hash(as_json)
            row = stored.get(commitment_id)
            progress = current_progress(reports.get(commitment_id, []),
                                        plan_text_progress(document, adopted[document.plan_id]))
            if row is not None and row.content_hash == digest:
                if row.progress is not None:
                    report.unchanged += 1
                    continue
                report.republished.append(commitment_id)
            elif row is None:
                row = CommitmentRow(id=commitment_id, plan_id=document.plan_id, pillar=0, section_code="", kind="",
                                    condition_type="", document={}, content_hash="", revision=0)
                report.created.append(commitment_id)
            else:
                report.updated.append(commitment_id)
            row.plan_id = document.plan_id
            row.pillar = document.pillar.number
            row.section_code = document.section_code
            row.kind = document.kind
            row.condition_type = document.condition.type
            row.document = as_json
            row.content_hash = digest
            row.progress = progress.model_dump(mode="json")
            row.revision += 1
            row.updated_at = now
            session.add(row)
            published = CommitmentPublished(revision=row.revision, updated_at=now, commitment=document,
                                            progress=progress)
            changes.append(NewEvent(
                topic=CATALOG_COMMITMENTS.name, key=commitment_id, type=COMMITMENT_PUBLISHED, source=CATALOG_SOURCE,
                subject=commitment_id, data=published.model_dump(mode="json"), time=now,
            ))

        for commitment_id in sorted(set(stored) - set(wanted)):
            session.delete(stored[commitment_id])
            report.removed.append(commitment_id)
            # No data: a tombstone, so compaction forgets the commitment.
            changes.append(NewEvent(
                topic=CATALOG_COMMITMENTS.name, key=commitment_id, type=COMMITMENT_REMOVED, source=CATALOG_SOURCE,
                subject=commitment_id, data=None, time=now,
            ))
        stage_events(session, changes)
        session.flush()
        wanted_plans = {plan.header.id for plan in plans}
        session.execute(delete(PlanRow).where(col(PlanRow.id).not_in(wanted_plans)))
        session.commit()
    log.info(
        "catalog synced: %d created, %d updated, %d republished with progress, %d removed, %d unchanged",
        len(report.created), len(report.updated), len(report.republished), len(report.removed), report.unchanged,
    )
    return report



def _upsert_plan(session: Session, plan: LoadedPlan, now) -> None:
    header = plan.header
    fields: dict[str, Any] = {
        "title": header.title,
        "adopted": header.adopted,
        "place": header.place,
        "source_document": header.source_document,
        "source_sha256": header.source_sha256,
        "source_text": plan.source_text,
        "pillars": {str(number): name for number, name in header.pillars.items()},
    }
    digest = content_hash(fields)
    row = session.get(PlanRow, header.id)
    if row is None:
        row = PlanRow(id=header.id, content_hash="", **fields)
    elif row.content_hash == digest:
        return
    for name, value in fields.items():
        setattr(row, name, value)
    row.content_hash = digest
    row.updated_at = now
    session.add(row)


def _sync_agencies(session: Session, plans: list[LoadedPlan]) -> None:
    wanted = {agency.id: agency for plan in plans for agency in plan.agencies}
    stored = {row.id: row for row in session.exec(select(AgencyRow)).all()}
    for agency_id, agency in wanted.items():
        row = stored.get(agency_id) or AgencyRow(id=agency_id, name="", kind="", aliases=[])
        row.name, row.country, row.kind, row.aliases = agency.name, agency.country, agency.kind, list(agency.aliases)
        session.add(row)
    for agency_id in set(stored) - set(wanted):
        session.delete(stored[agency_id])
