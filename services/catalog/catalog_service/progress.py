"""What progress reports mean, free of HTTP and of the database.

Reports are append-only. The status that holds on a commitment is that of its
latest report by `as_of`, ties going to the later report (by `reported_at`,
then insertion order). A report that a correction has superseded no longer
counts. With no report, the status is the one read from the plan's text,
holding from the plan's adoption.

`current_progress(reports, plan_text, on=day)` is the same rule as of an
earlier day (for reports as of a review meeting's date).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol

from shared.contracts.catalog import PROGRESS_STATUSES, CommitmentDocument, CurrentProgress, ProgressStatus
from shared.messaging_models import as_utc

STATUS_BY_CODE: dict[int, ProgressStatus] = {code: name for name, code in PROGRESS_STATUSES.items()}  # type: ignore[misc]
# The one status in which silence makes a commitment stale.
STALE_STATUS: ProgressStatus = "implementation"


class ReportFacts(Protocol):
    """What the rules read of a report: a stored row or any object alike."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def as_of(self) -> date: ...
    @property
    def reported_at(self) -> datetime: ...
    @property
    def seq(self) -> int | None: ...
    @property
    def supersedes(self) -> str | None: ...


def report_order(report: ReportFacts) -> tuple[date, datetime, int]:
    """Later is greater: by the day the status holds from, then by when it was
    reported, then by insertion."""
    return report.as_of, as_utc(report.reported_at), report.seq or 0


def effective_reports(reports: Iterable[ReportFacts], on: date | None = None) -> list[ReportFacts]:
    """The reports that count, by `report_order`. With `on`, only what was
    known that day counts: reports made by then about a day up to then (and a
    correction made later does not yet supersede)."""
    known = [report for report in reports if on is None or (
        report.as_of <= on and as_utc(report.reported_at).date() <= on)]
    superseded = {report.supersedes for report in known if report.supersedes}
    return sorted((report for report in known if report.id not in superseded), key=report_order)


def plan_text_progress(document: CommitmentDocument, adopted: date) -> CurrentProgress:
    """The status the plan's text gives, holding from the plan's adoption."""
    return CurrentProgress(status=STATUS_BY_CODE[document.status.code], source="plan_text", as_of=adopted)


def current_progress(reports: Iterable[ReportFacts], plan_text: CurrentProgress,
                     on: date | None = None) -> CurrentProgress:
    counted = effective_reports(reports, on)
    if not counted:
        return plan_text
    latest = counted[-1]
    return CurrentProgress(status=latest.status, source="report", as_of=latest.as_of,
                           report_id=latest.id, reported_at=as_utc(latest.reported_at))


def last_reported_at(reports: Iterable[ReportFacts]) -> datetime | None:
    """When anything was last reported, corrections included."""
    return max((as_utc(report.reported_at) for report in reports), default=None)


def stale_from(progress: CurrentProgress, last_reported: datetime | None, adopted: date,
               stale_after: timedelta) -> datetime | None:
    """When the commitment becomes stale if nothing more is reported: in
    implementation, `stale_after` past the last report (or, never reported,
    past the plan's adoption). None when its status cannot go stale."""
    if progress.status != STALE_STATUS:
        return None
    since = last_reported if last_reported is not None else datetime.combine(adopted, time(), tzinfo=UTC)
    return since + stale_after


@dataclass(frozen=True)
class EvidenceLink:
    title: str
    url: str
    as_of: date
    status: str


@dataclass(frozen=True)
class ProgressTrail:
    """What the IATI export says of a commitment's reports."""

    last_reported_at: datetime | None = None
    started_on: date | None = None  # actual start: the first report in implementation
    ended_on: date | None = None  # actual end: the report that closed it
    documents: tuple[EvidenceLink, ...] = ()


def progress_trail(reports: Sequence[ReportFacts], evidence_of: dict[str, list[dict]]) -> ProgressTrail:
    """From a commitment's reports (and each report's evidence, by report id).
    Only reports that count are read: a superseded report was corrected."""
    counted = effective_reports(reports)
    started_on = next((report.as_of for report in counted if report.status == "implementation"), None)
    ended_on = None
    if counted and counted[-1].status == "closed":
        # The first report of the closing run: later ones only confirm it.
        closing = len(counted) - 1
        while closing > 0 and counted[closing - 1].status == "closed":
            closing -= 1
        ended_on = counted[closing].as_of
    documents = tuple(
        EvidenceLink(title=item["title"], url=item["url"], as_of=report.as_of, status=report.status)
        for report in counted for item in evidence_of.get(report.id, []) if item.get("url")
    )
    return ProgressTrail(last_reported_at=last_reported_at(reports), started_on=started_on, ended_on=ended_on,
                         documents=documents)
