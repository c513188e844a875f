"""The rules of progress as plain function calls: which report holds now,
when a commitment goes stale, and what the IATI export reads. (The status as
of an earlier day is the review report's rule, tested on real databases in
test_reviews.py.)"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from catalog_service.progress import (
    current_progress,
    effective_reports,
    progress_trail,
    stale_from,
    stale_since,
)
from catalog_service.reporting import EvidenceCreate, ProgressCreate
from shared.contracts.catalog import CurrentProgress

ADOPTED = date(2006, 6, 5)
PLAN_TEXT = CurrentProgress(status="pipeline", source="plan_text", as_of=ADOPTED)
T0 = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
HALF_YEAR = timedelta(days=180)


@dataclass(frozen=True)
class Report:
    id: str
    status: str
    as_of: date
    reported_at: datetime
    seq: int
    supersedes: str | None = None


def report(number: int, status: str, as_of: date, *, hours: int | None = None, supersedes: str | None = None):
    """Report `number`, inserted in that order and (unless told) reported an hour apart."""
    at = T0 + timedelta(hours=number if hours is None else hours)
    return Report(id=f"r{number}", status=status, as_of=as_of, reported_at=at, seq=number, supersedes=supersedes)


def test_without_reports_the_plan_text_holds():
    assert current_progress([], PLAN_TEXT) is PLAN_TEXT


def test_the_latest_as_of_holds_even_when_reported_earlier():
    reports = [report(1, "implementation", date(2027, 2, 1)), report(2, "suspended", date(2026, 12, 1))]
    progress = current_progress(reports, PLAN_TEXT)
    assert (progress.status, progress.report_id, progress.source) == ("implementation", "r1", "report")
    assert progress.as_of == date(2027, 2, 1) and progress.reported_at == reports[0].reported_at


def test_a_tie_on_as_of_goes_to_the_later_report_then_to_insertion_order():
    day = date(2027, 2, 1)
    later_reported = [report(1, "implementation", day, hours=5), report(2, "closed", day, hours=3)]
    assert current_progress(later_reported, PLAN_TEXT).report_id == "r1"
    same_moment = [report(1, "implementation", day, hours=3), report(2, "closed", day, hours=3)]
    assert current_progress(same_moment, PLAN_TEXT).report_id == "r2"
    assert current_progress(list(reversed(same_moment)), PLAN_TEXT).report_id == "r2", "order given does not matter"


def test_a_superseded_report_no_longer_counts():
    mistaken = report(1, "closed", date(2027, 2, 20))
    correction = report(2, "implementation", date(2027, 1, 10), supersedes="r1")
    progress = current_progress([mistaken, correction], PLAN_TEXT)
    assert (progress.status, progress.report_id) == ("implementation", "r2")
    # A correction of the correction: only the last of the chain counts.
    again = report(3, "finalisation", date(2027, 1, 15), supersedes="r2")
    assert [r.id for r in effective_reports([mistaken, correction, again])] == ["r3"]


def test_only_implementation_goes_stale_counted_from_the_last_report_or_the_adoption():
    in_implementation = CurrentProgress(status="implementation", source="report", as_of=date(2027, 1, 1))
    assert stale_from(in_implementation, T0, None, ADOPTED, HALF_YEAR) == T0 + HALF_YEAR
    from_text = CurrentProgress(status="implementation", source="plan_text", as_of=ADOPTED)
    assert stale_from(from_text, None, None, ADOPTED, HALF_YEAR) == datetime(2006, 12, 2, tzinfo=UTC)
    for status in ("pipeline", "finalisation", "closed", "cancelled", "suspended"):
        assert stale_from(CurrentProgress(status=status, source="report", as_of=ADOPTED), T0, None, ADOPTED,
                          HALF_YEAR) is None


def test_an_activated_offer_still_open_counts_from_its_activation_or_a_later_report():
    activated = T0 + timedelta(days=3)
    # In pipeline by the text, never reported: only its activation makes it expected to report.
    assert stale_since("pipeline", None, activated, ADOPTED) == activated
    assert stale_since("pipeline", None, None, ADOPTED) is None
    # In implementation, the activation after the last report restarts the count.
    assert stale_since("implementation", T0, activated, ADOPTED) == activated
    assert stale_since("implementation", None, activated, ADOPTED) == activated
    # A report after the activation moves it again.
    reported = activated + timedelta(days=30)
    assert stale_since("pipeline", reported, activated, ADOPTED) == reported
    assert stale_from(CurrentProgress(status="pipeline", source="report", as_of=ADOPTED), reported, activated,
                      ADOPTED, HALF_YEAR) == reported + HALF_YEAR
    for status in ("finalisation", "closed", "cancelled", "suspended"):
        assert stale_since(status, None, activated, ADOPTED) is None


def test_the_trail_gives_actual_dates_and_the_evidence_of_counted_reports():
    reports = [
        report(1, "implementation", date(2026, 5, 1)),
        report(2, "implementation", date(2026, 9, 1)),
        report(3, "closed", date(2027, 1, 5)),
        report(4, "closed", date(2027, 2, 5)),  # confirms; the first closing report dates the end
        report(5, "implementation", date(2026, 6, 1)),
        report(6, "implementation", date(2026, 6, 1), supersedes="r5"),
    ]
    evidence = {
        "r1": [{"title": "Inception", "url": "https://example.org/i.pdf"}, {"title": "Letter", "reference": "L-1"}],
        "r5": [{"title": "Wrong", "url": "https://example.org/wrong"}],
    }
    trail = progress_trail(reports, evidence)
    assert trail.started_on == date(2026, 5, 1) and trail.ended_on == date(2027, 1, 5)
    assert trail.last_reported_at == reports[-1].reported_at
    assert [link.url for link in trail.documents] == ["https://example.org/i.pdf"]
    reopened = progress_trail([*reports, report(7, "implementation", date(2027, 2, 20))], {})
    assert reopened.ended_on is None, "no longer closed: no actual end"
    assert progress_trail([], {}) == progress_trail([], {"x": []})


def test_a_report_body_is_checked_and_tidied():
    body = ProgressCreate.model_validate({
        "status": "closed", "as_of": "2027-01-05", "summary": "  Done.  ",
        "evidence": [{"title": " Final report ", "url": "HTTPS://example.org/final"}], "figures": {"km": 12.5},
    })
    assert body.summary == "Done." and body.evidence[0].title == "Final report"
    assert EvidenceCreate(title="t", reference="R-1").url is None
