"""What progress reports mean, free of HTTP and of the database.

Reports are append-only. The status that holds on a commitment is that of its
latest report by `as_of`, ties going to the later report (by `reported_at`,
then insertion order). A report that a correction has superseded no longer
counts. With no report, the status is the one read from the plan's text,
holding from the plan's adoption.

The status as of an earlier day (a review meeting's date) has one rule, in
reviews.py (`last_reports_on`, computed in the database): the same order,
over the reports as of that day or earlier, whenever they were recorded.
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
# An activated offer in one of these is still expected to report.
ACTIVATED_STILL_OPEN: tuple[ProgressStatus, ...] = ("pipeline", "implementation")


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


def effective_reports(reports: Iterable[ReportFacts]) -> list[ReportFacts]:
    """The reports that count now, by `report_order`: all but those a correction superseded."""
    reports = list(reports)
    superseded = {report.supersedes for report in reports if report.supersedes}
    return sorted((report for report in reports if report.id not in superseded), key=report_order)


def plan_text_progress(document: CommitmentDocument, adopted: date) -> CurrentProgress:
    """The status the plan's text gives, holding from the plan's adoption."""
    return CurrentProgress(status=STATUS_BY_CODE[document.status.code], source="plan_text", as_of=adopted)


def current_progress(reports: Iterable[ReportFacts], plan_text: CurrentProgress) -> CurrentProgress:
    """The status that holds now."""
    counted = effective_reports(reports)
    if not counted:
        return plan_text
    latest = counted[-1]
    return CurrentProgress(status=latest.status, source="report", as_of=latest.as_of,
                           report_id=latest.id, reported_at=as_utc(latest.reported_at))


def last_reported_at(reports: Iterable[ReportFacts]) -> datetime | None:
    """When anything was last reported, corrections included."""
    return max((as_utc(report.reported_at) for report in reports), default=None)


def stale_since(status: str, last_reported: datetime | None, activated: datetime | None,
                adopted: date) -> datetime | None:
    """The moment silence on a commitment starts to count toward staleness,
    or None when its status cannot go stale. One rule for the list's `stale`
    filter and the staleness check's events:
    - in implementation: since its last report (never reported: since the
      plan's adoption);
    - an activated offer still open (pipeline or implementation): since its
      last report or its first activation, whichever is later."""
    starts: list[datetime] = []
    if status == STALE_STATUS:
        starts.append(last_reported or datetime.combine(adopted, time(), tzinfo=UTC))
    if activated is not None and status in ACTIVATED_STILL_OPEN:
        starts += [activated, *([last_reported] if last_reported else [])]
    return max(starts) if starts else None


def stale_from(progress: CurrentProgress, last_reported: datetime | None, activated: datetime | None,
               adopted: date, stale_after: timedelta) -> datetime | None:
    """When the commitment becomes stale if nothing more is reported (see
    `stale_since`); None when its status cannot go stale."""
    since = stale_since(progress.status, last_reported, activated, adopted)
    return None if since is None else since + stale_after


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
