"""The catalog as the API serves it: an immutable snapshot loaded from the
database after each sync, and renewed for the commitments whose revision
moved (a progress report moves it).

The catalog is small (a plan has about a hundred commitments) and changes
only with plan files and progress reports, so queries run over the snapshot
in memory and each commitment's JSON, its progress included, is rendered once,
when the snapshot is built. Staleness depends on the time of the query: each
commitment carries the moment it goes stale, and a query compares.
"""

import bisect
import dataclasses
import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import func
from sqlalchemy import select as core_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from catalog_service.models import AgencyRow, CommitmentActivityRow, CommitmentRow, PlanRow, ProgressReportRow
from catalog_service.progress import (
    ProgressTrail,
    current_progress,
    plan_text_progress,
    progress_trail,
    stale_from,
)
from shared.contracts.catalog import CommitmentDocument, ConditionType, CurrentProgress, ProgressStatus
from shared.db import table_of
from shared.messaging_models import as_utc

DEFAULT_STALE_AFTER = timedelta(days=180)


class CommitmentRead(CommitmentDocument):
    revision: int
    updated_at: datetime
    progress: CurrentProgress


class PillarCount(BaseModel):
    number: int
    name: str
    commitments: int


class PlanRead(BaseModel):
    id: str
    title: str
    adopted: date
    place: str | None
    source_document: str
    source_sha256: str
    pillars: list[PillarCount]
    commitments: int
    commitments_by_condition: dict[str, int]
    links: dict[str, str]


class AgencyRead(BaseModel):
    id: str
    name: str
    country: str | None
    kind: str
    aliases: list[str]
    responsible_for: int


@dataclass(frozen=True)
class CommitmentView:
    read: CommitmentRead
    json: bytes
    search_text: str  # lower-cased text, section and condition words, for `q`
    # When it goes stale unless something is reported (None: its status cannot).
    stale_from: datetime | None = None
    trail: ProgressTrail = ProgressTrail()
    content_hash: str = ""

    def stale_at(self, now: datetime) -> bool:
        return self.stale_from is not None and self.stale_from <= now


@dataclass(frozen=True)
class CommitmentFilter:
    plan_id: str | None = None
    pillar: int | None = None
    section: str | None = None
    actor: str | None = None
    beneficiary: str | None = None
    requestable_by: str | None = None
    condition: ConditionType | None = None
    kind: str | None = None
    sector: str | None = None
    q: str | None = None
    status: ProgressStatus | None = None
    stale: bool | None = None
    now: datetime | None = None  # the time `stale` is judged at

    def matches(self, view: CommitmentView) -> bool:
        commitment = view.read
        if self.plan_id is not None and commitment.plan_id != self.plan_id:
            return False
        if self.pillar is not None and commitment.pillar.number != self.pillar:
            return False
        if self.section is not None and self.section not in (commitment.section_code, commitment.section):
            return False
        if self.actor is not None and self.actor not in commitment.actors:
            return False
        if self.beneficiary is not None and self.beneficiary not in commitment.beneficiaries:
            return False
        if self.requestable_by is not None and self.requestable_by not in commitment.requestable_by:
            return False
        if self.condition is not None and commitment.condition.type != self.condition:
            return False
        if self.kind is not None and commitment.kind != self.kind:
            return False
        if self.sector is not None and self.sector not in commitment.sectors:
            return False
        if self.status is not None and commitment.progress.status != self.status:
            return False
        if self.stale is not None:
            if self.now is None:
                raise ValueError("filtering by staleness needs the time")
            if view.stale_at(self.now) != self.stale:
                return False
        return self.q is None or self.q.lower() in view.search_text


@dataclass(frozen=True)
class CatalogSnapshot:
    plans: dict[str, PlanRead]
    source_texts: dict[str, str]
    commitments: list[CommitmentView]
    by_id: dict[str, CommitmentView]
    agencies: list[AgencyRead]
    fingerprint: str
    by_pillar_and_condition: dict[tuple[int, str], int] = field(default_factory=dict)
    # Rendered list pages by raw query string. The snapshot never changes, so a
    # page never goes stale; a new snapshot starts with an empty cache. A page
    # that filters by staleness is remembered under its query and
    # `stale_count(now)`, which tells apart every set of stale commitments.
    page_cache: dict[bytes, tuple[bytes, str]] = field(default_factory=dict)
    page_cache_size: int = 1024
    stale_after: timedelta = DEFAULT_STALE_AFTER
    # The moments commitments go stale, sorted: how many have passed by a time.
    stale_thresholds: tuple[datetime, ...] = ()
    # Each commitment's revision: what a refresh compares with the database.
    revisions: dict[str, int] = field(default_factory=dict)
    # Each activated offer's first activation (requests.events): a refresh
    # compares these too, since an activation can make an offer go stale.
    activations: dict[str, datetime] = field(default_factory=dict)
    plan_hashes: dict[str, str] = field(default_factory=dict)

    def stale_count(self, now: datetime) -> int:
        return bisect.bisect_right(self.stale_thresholds, now)

    def cached_page(self, query_string: bytes) -> tuple[bytes, str] | None:
        return self.page_cache.get(query_string)

    def remember_page(self, query_string: bytes, page: tuple[bytes, str]) -> None:
        if len(self.page_cache) >= self.page_cache_size:
            self.page_cache.pop(next(iter(self.page_cache)))  # oldest first
        self.page_cache[query_string] = page

    def query(self, criteria: CommitmentFilter) -> list[CommitmentView]:
        return [view for view in self.commitments if criteria.matches(view)]

    def commitments_of(self, plan_id: str) -> list[CommitmentView]:
        return [view for view in self.commitments if view.read.plan_id == plan_id]


_REPORTS = table_of(ProgressReportRow)
_COMMITMENTS = table_of(CommitmentRow)
_PLANS = table_of(PlanRow)
# What a refresh compares: a small query, run every few seconds.
_REVISIONS = core_select(_COMMITMENTS.c.id, _COMMITMENTS.c.revision, _COMMITMENTS.c.content_hash)
_PLAN_HASHES = core_select(_PLANS.c.id, _PLANS.c.content_hash)
_ACTIVITY = table_of(CommitmentActivityRow)
_FIRST_ACTIVATION = (core_select(_ACTIVITY.c.commitment_id, func.min(_ACTIVITY.c.occurred_at))
                     .where(_ACTIVITY.c.kind == "offer_activated").group_by(_ACTIVITY.c.commitment_id))
# What views need of reports: not the summaries.
_REPORT_FACTS = core_select(
    _REPORTS.c.seq, _REPORTS.c.id, _REPORTS.c.commitment_id, _REPORTS.c.status, _REPORTS.c.as_of,
    _REPORTS.c.reported_at, _REPORTS.c.supersedes, _REPORTS.c.evidence,
)


def reports_by_commitment(session: Session, commitment_ids: Iterable[str] | None = None) -> dict[str, list]:
    """The facts of the reports (not their summaries), by commitment id."""
    statement = _REPORT_FACTS
    if commitment_ids is not None:
        statement = statement.where(_REPORTS.c.commitment_id.in_(list(commitment_ids)))
    grouped: dict[str, list] = defaultdict(list)
    for report in session.execute(statement):
        grouped[report.commitment_id].append(report)
    return grouped


def first_activations(session: Session) -> dict[str, datetime]:
    """When each activated offer was first activated, by commitment id."""
    return {commitment_id: as_utc(first) for commitment_id, first in session.execute(_FIRST_ACTIVATION)}


def build_view(row: CommitmentRow, reports: list, adopted: date, stale_after: timedelta,
               activated: datetime | None = None) -> CommitmentView:
    """A commitment as served, with the progress its reports give (and, for
    staleness, its first activation if it is an activated offer)."""
    document = CommitmentDocument.model_validate(row.document)
    progress = current_progress(reports, plan_text_progress(document, adopted))
    trail = progress_trail(reports, {report.id: report.evidence for report in reports})
    read = CommitmentRead.model_validate(
        row.document | {"revision": row.revision, "updated_at": as_utc(row.updated_at), "progress": progress}
    )
    search_text = " ".join([read.text, read.section, read.condition.text or ""]).lower()
    return CommitmentView(
        read=read, json=read.model_dump_json().encode(), search_text=search_text,
        stale_from=stale_from(progress, trail.last_reported_at, activated, adopted, stale_after), trail=trail,
        content_hash=row.content_hash,
    )


def _fingerprint(views: Iterable[CommitmentView], plan_hashes: dict[str, str]) -> str:
    parts = [f"{view.read.id}:{view.content_hash}:{view.read.revision}" for view in views]
    parts += [f"{plan_id}:{digest}" for plan_id, digest in plan_hashes.items()]
    return hashlib.sha256("|".join(sorted(parts)).encode()).hexdigest()[:24]


def _stale_thresholds(views: Iterable[CommitmentView]) -> tuple[datetime, ...]:
    return tuple(sorted(view.stale_from for view in views if view.stale_from is not None))


def load_snapshot(engine: Engine, *, stale_after: timedelta = DEFAULT_STALE_AFTER) -> CatalogSnapshot:
    with Session(engine) as session:
        plan_rows = session.exec(select(PlanRow).order_by(col(PlanRow.adopted), col(PlanRow.id))).all()
        commitment_rows = session.exec(select(CommitmentRow)).all()
        agency_rows = session.exec(select(AgencyRow).order_by(col(AgencyRow.id))).all()
        reports = reports_by_commitment(session)
        activations = first_activations(session)

    adopted = {row.id: row.adopted for row in plan_rows}
    views = [build_view(row, reports.get(row.id, []), adopted[row.plan_id], stale_after, activations.get(row.id))
             for row in commitment_rows]
    plan_order = {row.id: position for position, row in enumerate(plan_rows)}
    views.sort(key=lambda view: (plan_order.get(view.read.plan_id, 0), view.read.source.start))

    plans = {}
    by_pillar_and_condition: dict[tuple[int, str], int] = {}
    for view in views:
        key = (view.read.pillar.number, view.read.condition.type)
        by_pillar_and_condition[key] = by_pillar_and_condition.get(key, 0) + 1
    for row in plan_rows:
        own = [view.read for view in views if view.read.plan_id == row.id]
        by_condition: dict[str, int] = {}
        for commitment in own:
            by_condition[commitment.condition.type] = by_condition.get(commitment.condition.type, 0) + 1
        plans[row.id] = PlanRead(
            id=row.id, title=row.title, adopted=row.adopted, place=row.place,
            source_document=row.source_document, source_sha256=row.source_sha256,
            pillars=[
                PillarCount(number=int(number), name=name,
                            commitments=sum(1 for c in own if c.pillar.number == int(number)))
                for number, name in sorted(row.pillars.items(), key=lambda item: int(item[0]))
            ],
            commitments=len(own),
            commitments_by_condition=dict(sorted(by_condition.items())),
            links={
                "commitments": f"/v1/commitments?plan_id={row.id}",
                "source": f"/v1/plans/{row.id}/source",
                "iati": f"/v1/plans/{row.id}/iati.xml",
            },
        )
    responsible_counts: dict[str, int] = {}
    for view in views:
        for agency in view.read.responsible_agencies:
            responsible_counts[agency.id] = responsible_counts.get(agency.id, 0) + 1
    agencies = [
        AgencyRead(id=row.id, name=row.name, country=row.country, kind=row.kind, aliases=list(row.aliases),
                   responsible_for=responsible_counts.get(row.id, 0))
        for row in agency_rows
    ]
    plan_hashes = {row.id: row.content_hash for row in plan_rows}
    return CatalogSnapshot(
        plans=plans,
        source_texts={row.id: row.source_text for row in plan_rows},
        commitments=views,
        by_id={view.read.id: view for view in views},
        agencies=agencies,
        fingerprint=_fingerprint(views, plan_hashes),
        by_pillar_and_condition=by_pillar_and_condition,
        stale_after=stale_after,
        stale_thresholds=_stale_thresholds(views),
        revisions={view.read.id: view.read.revision for view in views},
        activations=activations,
        plan_hashes=plan_hashes,
    )


def refresh_snapshot(engine: Engine, snapshot: CatalogSnapshot) -> CatalogSnapshot:
    """The snapshot as the database has it now: the same object when nothing
    changed; the commitments whose revision or first activation moved rebuilt
    when only that happened (progress reports, offers activated); else loaded
    anew (a sync changed the plans)."""
    with Session(engine) as session:
        revisions = {row.id: (row.revision, row.content_hash) for row in session.execute(_REVISIONS)}
        plan_hashes = {row.id: row.content_hash for row in session.execute(_PLAN_HASHES)}
        if plan_hashes != snapshot.plan_hashes or set(revisions) != set(snapshot.revisions):
            return load_snapshot(engine, stale_after=snapshot.stale_after)
        activations = first_activations(session)
        moved = [commitment_id for commitment_id, (revision, _) in revisions.items()
                 if revision != snapshot.revisions[commitment_id]
                 or activations.get(commitment_id) != snapshot.activations.get(commitment_id)]
        if not moved:
            return snapshot
        if any(revisions[commitment_id][1] != snapshot.by_id[commitment_id].content_hash
               for commitment_id in moved):
            return load_snapshot(engine, stale_after=snapshot.stale_after)  # the text changed, not only progress
        rows = session.exec(select(CommitmentRow).where(col(CommitmentRow.id).in_(moved))).all()
        reports = reports_by_commitment(session, moved)
    renewed = {
        row.id: build_view(row, reports.get(row.id, []), snapshot.plans[row.plan_id].adopted, snapshot.stale_after,
                           activations.get(row.id))
        for row in rows
    }
    views = [renewed.get(view.read.id, view) for view in snapshot.commitments]
    return dataclasses.replace(
        snapshot,
        commitments=views,
        by_id={view.read.id: view for view in views},
        fingerprint=_fingerprint(views, snapshot.plan_hashes),
        page_cache={},
        stale_thresholds=_stale_thresholds(views),
        revisions={view.read.id: view.read.revision for view in views},
        activations=activations,
    )
