"""Recording progress reports: what a report must say, who may make one, and
the one transaction that stores it with its events.

`record_report` runs inside the group-commit writer's transaction. It stores
the report, moves the commitment to its next revision with the progress that
now holds, and stages `progress.reported.v1` (catalog.progress) and the
commitment's new `commitment.published.v1` record (catalog.commitments) in the
outbox of that same transaction.
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)
from sqlalchemy import func
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from catalog_service.models import CommitmentRow, PlanRow, ProgressReportRow
from catalog_service.progress import current_progress, plan_text_progress
from shared.contracts.catalog import (
    CATALOG_SOURCE,
    COMMITMENT_PUBLISHED,
    PROGRESS_REPORTED,
    CommitmentDocument,
    CommitmentPublished,
    CurrentProgress,
    EvidenceItem,
    ProgressReported,
    ProgressStatus,
    Reporter,
)
from shared.db import table_of
from shared.errors import Conflict, Forbidden, Invalid, NotFound
from shared.identity import Principal
from shared.messaging_models import UtcDatetime, as_utc
from shared.outbox import NewEvent, stage_events
from shared.topics import CATALOG_COMMITMENTS, CATALOG_PROGRESS

MAX_SUMMARY = 4000
MAX_EVIDENCE = 20
MAX_FIGURES = 20


# -- the body of a report ------------------------------------------------------
def _printable(text: str) -> str:
    """Line breaks and tabs are text; other control characters are not (and
    PostgreSQL cannot store NUL at all)."""
    if any((ord(char) < 32 and char not in "\n\r\t") or char == "\x7f" for char in text):
        raise ValueError("control characters are not accepted")
    return text


Text = Annotated[str, AfterValidator(_printable)]
# Report ids are UUIDs; the pattern keeps anything else away from queries.
REPORT_ID_PATTERN = r"^[A-Za-z0-9-]{1,36}$"


class EvidenceCreate(BaseModel):
    """A document that shows the progress: a web address, or a reference to
    one that is not online (exactly one of the two)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    title: Text = Field(min_length=1, max_length=300)
    url: str | None = Field(default=None, max_length=2000, description="http or https only")
    reference: Text | None = Field(default=None, min_length=1, max_length=500,
                                   description="e.g. a document number, when there is no URL")

    @field_validator("url")
    @classmethod
    def _http_only(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not url.isascii() or any(char.isspace() or not char.isprintable() for char in url):
            raise ValueError("a URL may hold only printable ASCII without spaces (percent-encode the rest)")
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError as error:
            raise ValueError(f"not a URL: {error}") from error
        if parts.scheme.lower() not in ("http", "https") or not host:
            raise ValueError("only http and https URLs with a host are accepted")
        return url

    @model_validator(mode="after")
    def _url_or_reference(self) -> "EvidenceCreate":
        if (self.url is None) == (self.reference is None):
            raise ValueError("give either a url or a reference")
        return self


FigureName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")]
FigureValue = StrictInt | Annotated[float, Field(strict=True, allow_inf_nan=False)] | Annotated[
    Text, StringConstraints(min_length=1, max_length=200)]


class ProgressCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    status: ProgressStatus = Field(description="IATI ActivityStatus by name")
    as_of: date = Field(description="The day the status holds from; not in the future")
    summary: Text = Field(min_length=1, max_length=MAX_SUMMARY, description="What has been done")
    evidence: list[EvidenceCreate] = Field(default_factory=list, max_length=MAX_EVIDENCE)
    figures: dict[FigureName, FigureValue] = Field(
        default_factory=dict, max_length=MAX_FIGURES, description='Numbers that show it, e.g. {"trainees": 950}')
    supersedes: str | None = Field(default=None, pattern=REPORT_ID_PATTERN,
                                   description="The id of an earlier report of this commitment that this corrects")


# -- a report as read ------------------------------------------------------------
class ReportedBy(BaseModel):
    role: str
    agency_id: str | None


class ProgressReportRead(BaseModel):
    id: str
    commitment_id: str
    status: ProgressStatus
    as_of: date
    summary: str
    evidence: list[EvidenceItem]
    figures: dict[str, int | float | str]
    supersedes: str | None
    superseded_by: str | None = Field(description="The correction of this report, if any")
    reported_by: ReportedBy
    reported_at: UtcDatetime
    links: dict[str, str]


class ProgressPage(BaseModel):
    items: list[ProgressReportRead]
    total: int
    limit: int
    offset: int
    next: str | None


def report_read(row: ProgressReportRow, superseded_by: str | None = None) -> ProgressReportRead:
    base = f"/v1/commitments/{row.commitment_id}"
    return ProgressReportRead(
        id=row.id, commitment_id=row.commitment_id, status=row.status, as_of=row.as_of,
        summary=row.summary, evidence=[EvidenceItem.model_validate(item) for item in row.evidence],
        figures=dict(row.figures), supersedes=row.supersedes, superseded_by=superseded_by,
        reported_by=ReportedBy(role=row.reporter_role, agency_id=row.reporter_agency_id),
        reported_at=as_utc(row.reported_at),
        links={"self": f"{base}/progress/{row.id}", "commitment": base},
    )


# -- who may report ----------------------------------------------------------------
def may_report(principal: Principal, commitment: CommitmentDocument) -> None:
    """Coordinators on any commitment; a partner agency on the commitments the
    catalog names it responsible for; nobody else."""
    if principal.role == "coordinator":
        return
    if principal.role != "partner":
        raise Forbidden("forbidden", "Not allowed for this role",
                        f"Coordinators and responsible partner agencies report progress; "
                        f"the key's role is {principal.role}.")
    responsible = [agency.id for agency in commitment.responsible_agencies]
    if principal.agency_id not in responsible:
        raise Forbidden("agency_not_responsible", "Not a responsible agency",
                        f"Only the agencies responsible for {commitment.id} report its progress "
                        f"({', '.join(responsible) or 'none named'}); the key's agency is {principal.agency_id}.",
                        responsible_agencies=responsible)


# -- the write ------------------------------------------------------------------------
def latest_today(now: datetime) -> date:
    """The latest date it is anywhere at `now` (UTC+14): a report made on the
    morning of its own day in Tokyo or Tashkent is not from the future."""
    return (now.astimezone(UTC) + timedelta(hours=14)).date()


@dataclass(frozen=True)
class RecordedReport:
    report: ProgressReportRead
    progress: CurrentProgress
    revision: int


def _lock_commitment(session: Session, commitment_id: str) -> CommitmentRow | None:
    """The commitment, locked on PostgreSQL so that reports on it (from any
    replica) and the start-up sync take their turns; on SQLite the write
    transaction already holds the database's lock."""
    statement = select(CommitmentRow).where(CommitmentRow.id == commitment_id)
    if session.connection().dialect.name != "sqlite":
        statement = statement.with_for_update()
    return session.exec(statement).first()


def record_report(session: Session, *, principal: Principal, commitment_id: str, body: ProgressCreate,
                  report_id: str, now: datetime) -> RecordedReport:
    row = _lock_commitment(session, commitment_id)
    if row is None:
        raise NotFound("commitment_not_found", "No such commitment", f"There is no commitment {commitment_id!r}.")
    commitment = CommitmentDocument.model_validate(row.document)
    may_report(principal, commitment)
    plan = session.get(PlanRow, row.plan_id)
    assert plan is not None  # a commitment's plan is deleted with it
    adopted = plan.adopted
    if body.as_of > latest_today(now):
        raise Invalid("as_of_in_future", "Progress cannot be reported ahead of time",
                      f"as_of {body.as_of} is after today ({latest_today(now)} at the latest, anywhere).")
    if body.as_of < adopted:
        raise Invalid("as_of_before_plan", "Progress before the plan",
                      f"as_of {body.as_of} is before the plan was adopted ({adopted}).")
    earlier = list(session.exec(select(ProgressReportRow).where(ProgressReportRow.commitment_id == commitment_id)
                                .order_by(col(ProgressReportRow.seq))).all())
    if body.supersedes is not None:
        _check_correction(earlier, body.supersedes, commitment_id)

    evidence = [item.model_dump(exclude_none=True) for item in body.evidence]
    report = ProgressReportRow(
        id=report_id, commitment_id=commitment_id, status=body.status, as_of=body.as_of, summary=body.summary,
        evidence=evidence, figures=dict(body.figures), supersedes=body.supersedes,
        reporter_key_id=principal.key_id, reporter_role=principal.role, reporter_agency_id=principal.agency_id,
        reported_at=now,
    )
    session.add(report)
    session.flush()  # its insertion order (seq), a tie-break of the current-status rule
    progress = current_progress([*earlier, report], plan_text_progress(commitment, adopted))
    row.progress = progress.model_dump(mode="json")
    row.revision += 1
    row.updated_at = now
    session.add(row)

    reported = ProgressReported(
        report_id=report.id, commitment_id=commitment_id, plan_id=commitment.plan_id,
        pillar=commitment.pillar.number, status=body.status, as_of=body.as_of, summary=body.summary,
        evidence=[EvidenceItem.model_validate(item) for item in evidence], figures=dict(body.figures),
        supersedes=body.supersedes,
        reported_by=Reporter(key_id=principal.key_id, role=principal.role, agency_id=principal.agency_id),
        reported_at=now, current=progress,
        responsible_agencies=[agency.id for agency in commitment.responsible_agencies],
        beneficiary_countries=list(commitment.beneficiaries),
    )
    published = CommitmentPublished(revision=row.revision, updated_at=now, commitment=commitment, progress=progress)
    stage_events(session, [
        NewEvent(topic=CATALOG_PROGRESS.name, key=commitment_id, type=PROGRESS_REPORTED, source=CATALOG_SOURCE,
                 subject=commitment_id, data=reported.model_dump(mode="json"), time=now),
        NewEvent(topic=CATALOG_COMMITMENTS.name, key=commitment_id, type=COMMITMENT_PUBLISHED, source=CATALOG_SOURCE,
                 subject=commitment_id, data=published.model_dump(mode="json"), time=now),
    ])
    return RecordedReport(report=report_read(report), progress=progress, revision=row.revision)


def _check_correction(earlier: list[ProgressReportRow], supersedes: str, commitment_id: str) -> None:
    if not any(report.id == supersedes for report in earlier):
        raise Invalid("superseded_report_not_found", "No such report to correct",
                      f"supersedes names {supersedes!r}, which is not a report of {commitment_id}.")
    correction = next((report for report in earlier if report.supersedes == supersedes), None)
    if correction is not None:
        # Corrections form a chain: correct the correction instead.
        raise Conflict("report_already_superseded", "That report is already corrected",
                       f"Report {supersedes} was superseded by {correction.id}; supersede that one instead.",
                       superseded_by=correction.id)


def new_report_id() -> str:
    return str(uuid.uuid4())


# -- reading -----------------------------------------------------------------------------
_REPORTS = table_of(ProgressReportRow)
_NEWEST_FIRST = (col(ProgressReportRow.reported_at).desc(), col(ProgressReportRow.seq).desc())


def list_reports(session: Session, commitment_id: str, *, limit: int, offset: int
                 ) -> tuple[list[ProgressReportRead], int]:
    """A page of the commitment's reports, newest first, and how many there are."""
    where = ProgressReportRow.commitment_id == commitment_id
    total = session.exec(select(func.count()).select_from(ProgressReportRow).where(where)).one()
    rows = session.exec(select(ProgressReportRow).where(where).order_by(*_NEWEST_FIRST)
                        .offset(offset).limit(limit)).all()
    corrections = _corrections_of(session, [row.id for row in rows])
    return [report_read(row, corrections.get(row.id)) for row in rows], total


def get_report(session: Session, commitment_id: str, report_id: str) -> ProgressReportRead:
    row = session.exec(select(ProgressReportRow).where(ProgressReportRow.id == report_id,
                                                       ProgressReportRow.commitment_id == commitment_id)).first()
    if row is None:
        raise NotFound("report_not_found", "No such report",
                       f"There is no report {report_id!r} on commitment {commitment_id!r}.")
    return report_read(row, _corrections_of(session, [row.id]).get(row.id))


def _corrections_of(session: Session, report_ids: list[str]) -> dict[str, str]:
    """Superseded report id -> the id of the report that corrects it."""
    if not report_ids:
        return {}
    pairs = session.execute(core_select(_REPORTS.c.supersedes, _REPORTS.c.id)
                            .where(_REPORTS.c.supersedes.in_(report_ids))).all()
    return {superseded: correction for superseded, correction in pairs}
