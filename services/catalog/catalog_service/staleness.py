"""Stale commitments, announced once per staleness period.

A commitment is stale when its current status is `implementation` and
nothing has been reported on it for `stale_after` (CATALOG_STALE_AFTER_DAYS),
counted from its last report, or from the plan's adoption when nobody has
reported. An activated offer (requests.events, through the read model in
activations.py) that is not closed, cancelled, suspended or in finalisation is
stale on the same terms, counted from its last report or its first
activation, whichever is later.

Periods are counted from that moment (`since`, see shared/periods.py), and
each is announced by one `commitment.stale.v1` event on catalog.progress, the
way the requests service announces stale requests: the period is claimed
with a conditional write on the commitment's `commitment_staleness` row (still
as the check read it) in the same transaction that stages the event, so
neither a second replica nor a check run again after a crash announces it
twice. A new report moves `since`, and counting starts again from period 1.
"""

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from prometheus_client import Gauge
from sqlalchemy import select as core_select
from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from catalog_service.models import CommitmentRow, CommitmentStalenessRow, PlanRow
from catalog_service.progress import current_progress, last_reported_at, plan_text_progress, stale_since
from catalog_service.snapshot import first_activations, reports_by_commitment
from shared.contracts.catalog import CATALOG_SOURCE, COMMITMENT_STALE, CommitmentDocument, CommitmentStale
from shared.db import table_of
from shared.group_commit import GroupCommitWriter
from shared.messaging_models import as_utc
from shared.outbox import NewEvent, stage_events
from shared.periods import StalenessWatch, claim_in_batches, period_start, staleness_period
from shared.topics import CATALOG_PROGRESS

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

STALE_COMMITMENTS = Gauge(
    "caj_catalog_stale_commitments",
    "Commitments in implementation (or activated offers) with nothing reported for the staleness period, by pillar",
    ["pillar"],
)

_STALENESS = table_of(CommitmentStalenessRow)


@dataclass(frozen=True)
class StaleCommitment:
    """A commitment stale now, and the row of its last announced period as stored."""

    event: CommitmentStale
    since: datetime
    claimed: tuple[datetime, int] | None  # (since, period) as the database gave them; None: no row yet

    @property
    def due(self) -> bool:
        """Its current period is not announced yet."""
        if self.claimed is None:
            return True
        since, period = self.claimed
        return as_utc(since) != self.since or period < self.event.period


def stale_commitments(read_engine: Engine, now: datetime, stale_after: timedelta) -> list[StaleCommitment]:
    """Every commitment stale at `now`, from the database (whichever replica wrote it)."""
    with Session(read_engine) as session:
        adopted = {plan.id: plan.adopted for plan in session.exec(select(PlanRow)).all()}
        commitments = session.exec(select(CommitmentRow)).all()
        reports = reports_by_commitment(session)
        activated = first_activations(session)
        claimed = {row.commitment_id: (row.since, row.period) for row in session.execute(core_select(_STALENESS))}
    stale = []
    for row in commitments:
        document = CommitmentDocument.model_validate(row.document)
        own = reports.get(row.id, [])
        progress = current_progress(own, plan_text_progress(document, adopted[row.plan_id]))
        last = last_reported_at(own)
        # The same rule as the list's `stale` filter (snapshot.py).
        since = stale_since(progress.status, last, activated.get(row.id), adopted[row.plan_id])
        if since is None:
            continue
        period = staleness_period(since, now, stale_after)
        if period < 1:
            continue
        stale.append(StaleCommitment(
            event=CommitmentStale(
                commitment_id=row.id, plan_id=row.plan_id, pillar=document.pillar.number, status=progress.status,
                last_reported_at=last, stale_since=period_start(since, period, stale_after), period=period,
                responsible_agencies=[agency.id for agency in document.responsible_agencies],
            ),
            since=since, claimed=claimed.get(row.id),
        ))
    return stale


def _claim(session: Session, item: StaleCommitment) -> bool:
    """Take the item's period: True when this transaction is the one to announce
    it. The compare-and-set matches only while the row is as the check read it
    (or, with no row yet, while there is none); on PostgreSQL a second claimer
    waits for the first one's row lock, then finds the row changed."""
    connection = session.connection()
    values = {"since": item.since, "period": item.event.period}
    if item.claimed is None:
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        insert = (dialect.insert(_STALENESS).values(commitment_id=item.event.commitment_id, **values)
                  .on_conflict_do_nothing(index_elements=["commitment_id"])
                  .returning(_STALENESS.c.commitment_id))  # a row back: this insert took it
        return connection.execute(insert).first() is not None
    since, period = item.claimed
    claim = (update(_STALENESS)
             .where(_STALENESS.c.commitment_id == item.event.commitment_id, _STALENESS.c.since == since,
                    _STALENESS.c.period == period)
             .values(**values))
    return connection.execute(claim).rowcount == 1


def _claim_and_stage(session: Session, due: Sequence[StaleCommitment], now: datetime) -> list[CommitmentStale]:
    claimed = [item.event for item in due if _claim(session, item)]
    stage_events(session, [
        NewEvent(topic=CATALOG_PROGRESS.name, key=event.commitment_id, type=COMMITMENT_STALE, source=CATALOG_SOURCE,
                 subject=event.commitment_id, data=event.model_dump(mode="json"), time=now)
        for event in claimed
    ])
    return claimed


def record_stale_gauge(stale: Sequence[StaleCommitment]) -> None:
    by_pillar = Counter(item.event.pillar for item in stale)
    STALE_COMMITMENTS.clear()
    for pillar in range(1, 6):
        STALE_COMMITMENTS.labels(str(pillar)).set(by_pillar.get(pillar, 0))


async def check_stale_commitments(*, writer: GroupCommitWriter, read_engine: Engine, now: datetime,
                                  stale_after: timedelta) -> list[CommitmentStale]:
    """Announce each commitment whose current staleness period is not
    announced yet; returns what this call announced."""
    now = now.astimezone(UTC)
    stale = await asyncio.to_thread(stale_commitments, read_engine, now, stale_after)
    record_stale_gauge(stale)
    due = [item for item in stale if item.due]
    return await claim_in_batches(writer, due, partial(_claim_and_stage, now=now))


class StaleCommitmentsWatch(StalenessWatch):
    """Checks for stale commitments every `interval` seconds (see StalenessWatch)."""

    name = "stale-commitments"
    what = "commitments"

    async def check_at(self, now: datetime) -> list:
        return await check_stale_commitments(writer=self.writer, read_engine=self.read_engine, now=now,
                                            stale_after=self.stale_after)
