"""Stale requests: waiting on someone, and their status has not changed for
`stale_after` (REQUESTS_STALE_AFTER_DAYS).

Staleness comes in periods: period n (n >= 1) covers
[status_since + n * stale_after, status_since + (n + 1) * stale_after).
Each period of a request is announced once, by one `request.stale.v1` event,
however many checks run and however many replicas run them: the period is
claimed with a conditional UPDATE (the request still has the status and the
status_since the check read, and a lower announced period) in the same
transaction that stages the event. A replica whose claim comes second finds
the row already claimed and announces nothing. A status change sets the
announced period back to 0 and starts counting again.

A check that finds a request several periods on (the service was down)
announces only the current period.
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from sqlalchemy import bindparam, update
from sqlalchemy import select as core_select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from requests_service.models import OfferRow, RequestRow
from shared.contracts.requests import REQUEST_STALE, REQUESTS_SOURCE, RequestStale
from shared.db import table_of
from shared.group_commit import GroupCommitWriter
from shared.messaging_models import as_utc
from shared.outbox import NewEvent, stage_events
from shared.periods import StalenessWatch, claim_in_batches, period_start, staleness_period
from shared.topics import REQUESTS_EVENTS

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Statuses in which a request waits on a coordinator or on the requesting agency.
WAITING_STATUSES = ("submitted", "under_review", "info_requested")


_REQUESTS = table_of(RequestRow)
_OFFERS = table_of(OfferRow)
_WAITING_TOO_LONG = (
    core_select(_REQUESTS.c.id, _REQUESTS.c.commitment_id, _REQUESTS.c.country, _REQUESTS.c.agency_id,
                _REQUESTS.c.status, _REQUESTS.c.status_since, _REQUESTS.c.stale_period,
                _OFFERS.c.responsible_agencies)
    .select_from(_REQUESTS.outerjoin(_OFFERS, _OFFERS.c.commitment_id == _REQUESTS.c.commitment_id))
    .where(_REQUESTS.c.status.in_(WAITING_STATUSES), _REQUESTS.c.status_since <= bindparam("stale_before"))
    .order_by(_REQUESTS.c.status_since, _REQUESTS.c.id)
)
# The compare-and-set that makes one period one event: it matches only while
# the request is as the check read it and the period is not announced yet.
# On PostgreSQL a second claimer waits for the first one's row lock, then
# finds stale_period already raised and matches nothing.
_CLAIM_PERIOD = (
    update(_REQUESTS)
    .where(_REQUESTS.c.id == bindparam("claim_id"), _REQUESTS.c.status == bindparam("claim_status"),
           _REQUESTS.c.status_since == bindparam("claim_since"), _REQUESTS.c.stale_period < bindparam("period"))
    .values(stale_period=bindparam("period"))
)


@dataclass(frozen=True)
class _Due:
    """A request whose current staleness period is not announced yet."""

    stored_since: datetime  # as the database gave it, for the compare-and-set
    event: RequestStale


def _due(read_engine: Engine, now: datetime, stale_after: timedelta) -> list[_Due]:
    with read_engine.connect() as connection:
        rows = connection.execute(_WAITING_TOO_LONG, {"stale_before": now - stale_after}).all()
    due = []
    for row in rows:
        since = as_utc(row.status_since)
        period = staleness_period(since, now, stale_after)
        if period > row.stale_period:
            due.append(_Due(row.status_since, RequestStale(
                request_id=row.id, commitment_id=row.commitment_id, country=row.country, agency_id=row.agency_id,
                status=row.status, status_since=since, stale_since=period_start(since, period, stale_after),
                period=period, responsible_agencies=list(row.responsible_agencies or []),
            )))
    return due


def _claim_and_stage(session: Session, due: Sequence[_Due], now: datetime) -> list[RequestStale]:
    connection = session.connection()
    claimed = [
        item.event for item in due
        if connection.execute(_CLAIM_PERIOD, {
            "claim_id": item.event.request_id, "claim_status": item.event.status, "claim_since": item.stored_since,
            "period": item.event.period,
        }).rowcount == 1
    ]
    stage_events(session, [
        NewEvent(topic=REQUESTS_EVENTS.name, key=event.request_id, type=REQUEST_STALE, source=REQUESTS_SOURCE,
                 subject=event.request_id, data=event.model_dump(mode="json"), time=now)
        for event in claimed
    ])
    return claimed


async def check_stale_requests(*, writer: GroupCommitWriter, read_engine: Engine, now: datetime,
                               stale_after: timedelta) -> list[RequestStale]:
    """Announce each request whose current staleness period is not announced
    yet; returns what this call announced."""
    now = now.astimezone(UTC)  # SQLite compares timestamps as UTC text
    due = await asyncio.to_thread(_due, read_engine, now, stale_after)
    return await claim_in_batches(writer, due, partial(_claim_and_stage, now=now))


class StaleRequestsWatch(StalenessWatch):
    """Checks for stale requests every `interval` seconds (see StalenessWatch)."""

    name = "stale-requests"
    what = "requests"

    async def check_at(self, now: datetime) -> list:
        return await check_stale_requests(writer=self.writer, read_engine=self.read_engine, now=now,
                                         stale_after=self.stale_after)
