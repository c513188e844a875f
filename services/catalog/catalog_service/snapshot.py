"""The catalog as the API serves it: an immutable snapshot loaded from the
database after each sync.

The catalog is small (a plan has about a hundred commitments) and changes only
when plan files change, so queries run over the snapshot in memory and each
commitment's JSON is rendered once, when the snapshot is built.
"""

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime

from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from catalog_service.models import AgencyRow, CommitmentRow, PlanRow
from shared.contracts.catalog import CommitmentDocument, ConditionType
from shared.messaging_models import as_utc


class CommitmentRead(CommitmentDocument):
    revision: int
    updated_at: datetime


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
    # page never goes stale; a new snapshot starts with an empty cache.
    page_cache: dict[bytes, tuple[bytes, str]] = field(default_factory=dict)
    page_cache_size: int = 1024

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


def load_snapshot(engine: Engine) -> CatalogSnapshot:
    with Session(engine) as session:
        plan_rows = session.exec(select(PlanRow).order_by(col(PlanRow.adopted), col(PlanRow.id))).all()
        commitment_rows = session.exec(select(CommitmentRow)).all()
        agency_rows = session.exec(select(AgencyRow).order_by(col(AgencyRow.id))).all()

    views = []
    for commitment_row in commitment_rows:
        read = CommitmentRead.model_validate(
            commitment_row.document
            | {"revision": commitment_row.revision, "updated_at": as_utc(commitment_row.updated_at)}
        )
        search_text = " ".join([read.text, read.section, read.condition.text or ""]).lower()
        views.append(CommitmentView(read=read, json=read.model_dump_json().encode(), search_text=search_text))
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
    fingerprint = hashlib.sha256(
        "|".join(sorted([f"{row.id}:{row.content_hash}" for row in commitment_rows]
                        + [f"{row.id}:{row.content_hash}" for row in plan_rows])).encode()
    ).hexdigest()[:24]
    return CatalogSnapshot(
        plans=plans,
        source_texts={row.id: row.source_text for row in plan_rows},
        commitments=views,
        by_id={view.read.id: view for view in views},
        agencies=agencies,
        fingerprint=fingerprint,
        by_pillar_and_condition=by_pillar_and_condition,
    )
