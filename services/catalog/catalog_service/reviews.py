"""Review meetings of a plan, and the plan's state as of a meeting's date.

Meetings are recorded by coordinators, and the Dialogue's real meetings since
the plan's adoption are loaded with the catalog (plans/dialogue-meetings.json,
each with the public report it is known from) under ids that do not change,
so loading them again adds nothing.

A review's report is computed from the append-only progress reports (time
travel). The rule for which reports count at a meeting's date D, the one rule
for a status as of an earlier day: every report whose `as_of` is on or before
D, whenever it was recorded. A report recorded after the meeting about an
earlier day completes the record of that day (most of the plan's history is
entered long after its meetings), so it shows; a report whose `as_of` is after
D does not, whenever it was recorded. A correction always replaces the report
it supersedes, whatever its own date. Among those that count, the last by the
current-status rule's order (progress.report_order) holds. Requests and
activations count when they happened on or before D (UTC).

The database picks each commitment's last report on D (`last_reports_on`),
so a report reads about two hundred rows however many reports there are.
A rendered report is kept (`ReviewReportCache`) until a report, an activity
or a meeting is added, or the catalog changes.
"""

import csv
import datetime as dt
import io
import json
import threading
import uuid
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func
from sqlalchemy import select as core_select
from sqlalchemy.engine import Engine, Row
from sqlmodel import Session, col, select

from catalog_service.models import CommitmentActivityRow, PlanRow, ProgressReportRow, ReviewMeetingRow
from catalog_service.progress import plan_text_progress
from catalog_service.reporting import Text
from catalog_service.snapshot import CatalogSnapshot, CommitmentView
from shared.contracts.catalog import PROGRESS_STATUSES, ProgressStatus
from shared.db import table_of
from shared.errors import Forbidden, Invalid, NotFound
from shared.identity import Principal
from shared.messaging_models import UtcDatetime, as_utc

DIALOGUE_MEETINGS_FILE = Path(__file__).parent / "plans" / "dialogue-meetings.json"
KIND_TITLES = {"foreign_ministers": "Foreign Ministers' Meeting", "senior_officials": "Senior Officials' Meeting"}
STATUS_ORDER: tuple[ProgressStatus, ...] = tuple(sorted(PROGRESS_STATUSES, key=PROGRESS_STATUSES.__getitem__))  # type: ignore[arg-type]


# -- the meetings ------------------------------------------------------------------
class ReviewCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    title: Text = Field(min_length=1, max_length=300, description="e.g. 17th Senior Officials' Meeting")
    date: dt.date = Field(description="The day of the meeting; not before the plan's adoption")
    place: Text = Field(min_length=1, max_length=200, description="A city, or 'online'")


class ReviewRead(BaseModel):
    id: str
    plan_id: str
    title: str
    date: dt.date
    place: str
    kind: str | None = Field(description="foreign_ministers or senior_officials for the Dialogue's own meetings")
    source_url: str | None = Field(description="Where a meeting loaded with the plan is publicly reported")
    recorded_at: UtcDatetime
    links: dict[str, str]


class ReviewList(BaseModel):
    items: list[ReviewRead]


def review_read(row: ReviewMeetingRow) -> ReviewRead:
    base = f"/v1/plans/{row.plan_id}/reviews/{row.id}"
    return ReviewRead(id=row.id, plan_id=row.plan_id, title=row.title, date=row.date, place=row.place, kind=row.kind,
                      source_url=row.source_url, recorded_at=as_utc(row.recorded_at),
                      links={"self": base, "report": f"{base}/report", "plan": f"/v1/plans/{row.plan_id}"})


def _ordinal(number: int) -> str:
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def meeting_rows(meetings_file: Path = DIALOGUE_MEETINGS_FILE) -> list[ReviewMeetingRow]:
    """The Dialogue's meetings as review meetings, with stable ids: the kind and
    number of the meeting (or its date, for an unnumbered one)."""
    data = json.loads(meetings_file.read_text(encoding="utf-8"))
    plan_id = data["plan_id"]
    rows = []
    for meeting in data["meetings"]:
        kind, number = meeting["kind"], meeting["number"]
        label = KIND_TITLES[kind]
        if number is not None:
            title, tag = f"{_ordinal(number)} {label}", str(number)
        else:
            title, tag = f"{label}: {meeting.get('note') or 'special meeting'}", meeting["date"]
        rows.append(ReviewMeetingRow(
            id=f"{plan_id}-{kind.replace('_', '-')}-{tag}", plan_id=plan_id, title=title[:300],
            date=date.fromisoformat(meeting["date"]), place=meeting["place"], kind=kind, source_url=meeting["source"],
        ))
    return rows


def load_dialogue_meetings(engine: Engine, now: datetime, meetings_file: Path = DIALOGUE_MEETINGS_FILE) -> int:
    """Store the meetings not stored yet, of a plan that is loaded, on or after
    its adoption. Returns how many were added (0 on every start but the first)."""
    rows = meeting_rows(meetings_file)
    with Session(engine) as session:
        adopted = {plan.id: plan.adopted for plan in session.exec(select(PlanRow)).all()}
        known = set(session.exec(select(ReviewMeetingRow.id)).all())
        added = [row for row in rows if row.id not in known and row.plan_id in adopted
                 and row.date >= adopted[row.plan_id]]
        for row in added:
            row.recorded_at = now
            session.add(row)
        session.commit()
    return len(added)


def record_review(session: Session, *, principal: Principal, snapshot: CatalogSnapshot, plan_id: str,
                  body: ReviewCreate, now: datetime) -> ReviewRead:
    if principal.role != "coordinator":
        raise Forbidden("forbidden", "Not allowed for this role",
                        f"Only coordinators record review meetings; the key's role is {principal.role}.")
    plan = snapshot.plans.get(plan_id)
    if plan is None:
        raise NotFound("plan_not_found", "No such plan", f"There is no plan {plan_id!r}.")
    if body.date < plan.adopted:
        raise Invalid("date_before_plan", "A review before the plan",
                      f"date {body.date} is before the plan was adopted ({plan.adopted}).")
    row = ReviewMeetingRow(id=str(uuid.uuid4()), plan_id=plan_id, title=body.title, date=body.date,
                           place=body.place, recorded_by_key_id=principal.key_id, recorded_at=now)
    session.add(row)
    session.flush()
    return review_read(row)


def plan_reviews(session: Session, plan_id: str) -> list[ReviewMeetingRow]:
    """The plan's review meetings by date (ties by id, which keeps the order stable)."""
    return list(session.exec(select(ReviewMeetingRow).where(ReviewMeetingRow.plan_id == plan_id)
                             .order_by(col(ReviewMeetingRow.date), col(ReviewMeetingRow.id))).all())


# -- the report --------------------------------------------------------------------
class LastReport(BaseModel):
    id: str
    status: ProgressStatus
    as_of: date
    summary: str
    reported_at: UtcDatetime


class RequestsSoFar(BaseModel):
    total: int
    by_status: dict[str, int] = Field(description="Each request's status on the review's date")


class ActivationSoFar(BaseModel):
    countries: list[str]
    activated_at: UtcDatetime


class CommitmentAtReview(BaseModel):
    id: str
    section_code: str
    kind: str
    condition_type: str
    status: ProgressStatus
    status_source: str = Field(description="report, or plan_text when nothing was reported by then")
    status_as_of: date
    previous_status: ProgressStatus = Field(description="Its status at the previous review (or the plan's text)")
    last_report: LastReport | None
    requests: RequestsSoFar
    activations: list[ActivationSoFar]


class StatusChange(BaseModel):
    commitment_id: str
    from_status: ProgressStatus
    to_status: ProgressStatus


class PillarAtReview(BaseModel):
    number: int
    name: str
    counts: dict[str, int]
    changes: list[StatusChange]
    commitments: list[CommitmentAtReview]


class ReviewReport(BaseModel):
    review: ReviewRead
    previous_review: ReviewRead | None = Field(
        description="Changes are counted from it; with none, from the status the plan's text gives")
    counts: dict[str, int]
    pillars: list[PillarAtReview]


_REPORTS = table_of(ProgressReportRow)
_ACTIVITY = table_of(CommitmentActivityRow)
_REVIEWS = table_of(ReviewMeetingRow)
# Reports a correction withdrew (`supersedes` is never NULL here, so NOT IN is safe).
_WITHDRAWN = core_select(_REPORTS.c.supersedes).where(_REPORTS.c.supersedes.is_not(None))


def last_reports_on(session: Session, commitment_ids: Sequence[str], day: date) -> dict[str, Row]:
    """The report whose status holds on `day`, by commitment id (none: nothing
    counted by then): the rule in the module's docstring, in one query. Rows
    have id, commitment_id, status, as_of, reported_at and summary."""
    latest_first = func.row_number().over(
        partition_by=_REPORTS.c.commitment_id,
        order_by=(_REPORTS.c.as_of.desc(), _REPORTS.c.reported_at.desc(), _REPORTS.c.seq.desc()))
    ranked = (core_select(_REPORTS.c.id, _REPORTS.c.commitment_id, _REPORTS.c.status, _REPORTS.c.as_of,
                          _REPORTS.c.reported_at, _REPORTS.c.summary, latest_first.label("latest"))
              .where(_REPORTS.c.commitment_id.in_(list(commitment_ids)), _REPORTS.c.as_of <= day,
                     _REPORTS.c.id.not_in(_WITHDRAWN))
              .subquery())
    statement = core_select(ranked).where(ranked.c.latest == 1)
    return {row.commitment_id: row for row in session.execute(statement)}


def _status_on(view: CommitmentView, last: Row | None, adopted: date
               ) -> tuple[ProgressStatus, str, date, Row | None]:
    if last is None:
        text = plan_text_progress(view.read, adopted)
        return text.status, "plan_text", adopted, None
    return last.status, "report", last.as_of, last


def _activity_until(session: Session, commitment_ids: Sequence[str], day: date) -> dict[str, list]:
    end_of_day = datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)
    grouped: dict[str, list] = defaultdict(list)
    statement = (core_select(_ACTIVITY).where(_ACTIVITY.c.commitment_id.in_(list(commitment_ids)),
                                              _ACTIVITY.c.occurred_at < end_of_day)
                 .order_by(_ACTIVITY.c.occurred_at, _ACTIVITY.c.seq))
    for row in session.execute(statement):
        grouped[row.commitment_id].append(row)
    return grouped


def _requests_and_activations(activity: list) -> tuple[RequestsSoFar, list[ActivationSoFar]]:
    request_status: dict[str, str] = {}
    activations = []
    for row in activity:
        if row.kind == "offer_activated":
            activations.append(ActivationSoFar(countries=list(row.countries), activated_at=as_utc(row.occurred_at)))
        elif row.request_id is not None and row.status is not None:
            request_status[row.request_id] = row.status
    by_status = dict(sorted(Counter(request_status.values()).items()))
    return RequestsSoFar(total=len(request_status), by_status=by_status), activations


def review_report(session: Session, snapshot: CatalogSnapshot, plan_id: str, review_id: str) -> ReviewReport:
    plan = snapshot.plans.get(plan_id)
    if plan is None:
        raise NotFound("plan_not_found", "No such plan", f"There is no plan {plan_id!r}.")
    reviews = plan_reviews(session, plan_id)
    position = next((index for index, row in enumerate(reviews) if row.id == review_id), None)
    if position is None:
        raise NotFound("review_not_found", "No such review meeting",
                       f"There is no review meeting {review_id!r} of plan {plan_id!r}.")
    review, previous = reviews[position], (reviews[position - 1] if position > 0 else None)
    views = snapshot.commitments_of(plan_id)
    ids = [view.read.id for view in views]
    last_on_review = last_reports_on(session, ids, review.date)
    last_on_previous = last_reports_on(session, ids, previous.date) if previous is not None else {}
    activity = _activity_until(session, ids, review.date)

    pillars = {pillar.number: PillarAtReview(number=pillar.number, name=pillar.name, counts={}, changes=[],
                                             commitments=[]) for pillar in plan.pillars}
    for view in views:
        status, source, as_of, last = _status_on(view, last_on_review.get(view.read.id), plan.adopted)
        if previous is not None:
            before = _status_on(view, last_on_previous.get(view.read.id), plan.adopted)[0]
        else:
            before = plan_text_progress(view.read, plan.adopted).status
        requests, activations = _requests_and_activations(activity.get(view.read.id, []))
        pillar = pillars[view.read.pillar.number]
        pillar.commitments.append(CommitmentAtReview(
            id=view.read.id, section_code=view.read.section_code, kind=view.read.kind,
            condition_type=view.read.condition.type, status=status, status_source=source, status_as_of=as_of,
            previous_status=before,
            last_report=LastReport(id=last.id, status=last.status, as_of=last.as_of, summary=last.summary,
                                   reported_at=as_utc(last.reported_at)) if last else None,
            requests=requests, activations=activations,
        ))
        if before != status:
            pillar.changes.append(StatusChange(commitment_id=view.read.id, from_status=before, to_status=status))
    totals: Counter[str] = Counter()
    for pillar in pillars.values():
        counted = Counter(commitment.status for commitment in pillar.commitments)
        pillar.counts = {status: counted.get(status, 0) for status in STATUS_ORDER}
        totals.update(counted)
    return ReviewReport(review=review_read(review), previous_review=review_read(previous) if previous else None,
                        counts={status: totals.get(status, 0) for status in STATUS_ORDER},
                        pillars=list(pillars.values()))


# -- rendered reports, kept until what they are computed from changes ---------------
def report_inputs(session: Session, plan_id: str) -> tuple:
    """What a plan's review reports are computed from, beside the catalog
    snapshot: its meetings, and how many progress reports and activities
    there are. Reports and activities are append-only, so their count moves
    with every one committed (a highest `seq` alone would miss one that
    commits after a later-numbered one, on PostgreSQL)."""
    meetings = tuple(tuple(row) for row in session.execute(core_select(_REVIEWS.c.id, _REVIEWS.c.date)
                                                           .where(_REVIEWS.c.plan_id == plan_id)
                                                           .order_by(_REVIEWS.c.date, _REVIEWS.c.id)))
    reports = session.execute(core_select(func.count(), func.max(_REPORTS.c.seq))).one()
    activity = session.execute(core_select(func.count(), func.max(_ACTIVITY.c.seq))).one()
    return meetings, tuple(reports), tuple(activity)


class ReviewReportCache:
    """Rendered review reports (JSON or CSV), by the snapshot's fingerprint,
    the report asked for and `report_inputs`: a new progress report, activity
    or meeting, from any replica, makes a new key, so a kept report is never
    served after what it was computed from changed. Least recently used go
    first. Routes run on several threads: the lock guards the dictionary,
    not the rendering (two threads may render the same report once each)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._rendered: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_render(self, key: tuple, render: Callable[[], bytes]) -> bytes:
        with self._lock:
            body = self._rendered.get(key)
            if body is not None:
                self._rendered.move_to_end(key)
                return body
        body = render()
        with self._lock:
            self._rendered[key] = body
            while len(self._rendered) > self.size:
                self._rendered.popitem(last=False)
        return body


CSV_COLUMNS = (
    "review_id", "review_date", "pillar", "pillar_name", "commitment_id", "section_code", "status", "status_source",
    "status_as_of", "previous_status", "changed", "last_report_id", "last_report_as_of", "last_report_reported_at",
    "last_report_summary", "requests", "requests_by_status", "activations", "activated_countries",
)


def report_csv(report: ReviewReport) -> str:
    """One row per commitment, under a header row of CSV_COLUMNS."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for pillar in report.pillars:
        for item in pillar.commitments:
            last = item.last_report
            writer.writerow((
                report.review.id, report.review.date.isoformat(), pillar.number, pillar.name, item.id,
                item.section_code, item.status, item.status_source, item.status_as_of.isoformat(),
                item.previous_status, "yes" if item.previous_status != item.status else "no",
                last.id if last else "", last.as_of.isoformat() if last else "",
                last.reported_at.isoformat() if last else "", last.summary if last else "",
                item.requests.total, ";".join(f"{name}:{count}" for name, count in item.requests.by_status.items()),
                len(item.activations),
                ";".join(sorted({country for activation in item.activations for country in activation.countries})),
            ))
    return out.getvalue()
