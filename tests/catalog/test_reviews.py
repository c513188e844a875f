"""Review meetings and their reports on the catalog's database (SQLite and
PostgreSQL): the Dialogue's real meetings loaded once with their sources,
time travel over the append-only reports, what changed since the previous
review, the requests and activations read model, and the CSV form."""

import csv
import io
import json
from datetime import UTC, date, datetime

import pytest
from sqlmodel import Session, select

from catalog_service.activations import handle_requests_event
from catalog_service.models import CommitmentActivityRow, ReviewMeetingRow
from catalog_service.plan_files import DEFAULT_PLAN_FILES, load_plan_file
from catalog_service.reporting import ProgressCreate, new_report_id, record_report
from catalog_service.reviews import (
    CSV_COLUMNS,
    DIALOGUE_MEETINGS_FILE,
    ReviewCreate,
    ReviewReportCache,
    load_dialogue_meetings,
    plan_reviews,
    record_review,
    report_csv,
    report_inputs,
    review_report,
)
from catalog_service.snapshot import load_snapshot
from catalog_service.sync import sync_plans
from shared.contracts.requests import (
    OFFER_ACTIVATED,
    REQUEST_STALE,
    REQUEST_STATUS_CHANGED,
    REQUEST_SUBMITTED,
    REQUESTS_SOURCE,
)
from shared.db import make_engine
from shared.errors import Forbidden, Invalid, NotFound
from shared.events import new_event
from shared.identity import Principal
from shared.migrations import upgrade

COORDINATOR = Principal(key_id="0" * 16, role="coordinator", agency_id=None, country=None)
PARTNER = Principal(key_id="1" * 16, role="partner", agency_id="jica", country="JP")
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
# Pipeline in the 2006 text (offers on request, JICA among the responsible).
FIRST, SECOND = "caj-2006-2-1-04", "caj-2006-2-1-05"
# The Dialogue's meetings as loaded: by stable ids.
FM3 = "caj-2006-foreign-ministers-3"  # Tashkent, 2010-08-07
SOM11 = "caj-2006-senior-officials-11"  # Tokyo, 2016-03-25
FM2 = "caj-2006-foreign-ministers-2"  # Tokyo, 2006-06-05: the plan's adoption


@pytest.fixture
def engine(database_url):
    upgrade("catalog_service", database_url)
    engine = make_engine(database_url)
    sync_plans(engine, [load_plan_file(path) for path in DEFAULT_PLAN_FILES], clock=lambda: NOW)
    load_dialogue_meetings(engine, NOW)
    yield engine
    engine.dispose()


def report(engine, commitment_id: str, status: str, as_of: str, *, summary: str = "Reported in a test.",
           supersedes: str | None = None, now: datetime = NOW) -> str:
    body = ProgressCreate(status=status, as_of=date.fromisoformat(as_of), summary=summary, supersedes=supersedes)
    with Session(engine) as session:
        recorded = record_report(session, principal=COORDINATOR, commitment_id=commitment_id, body=body,
                                 report_id=new_report_id(), now=now)
        session.commit()
    return recorded.report.id


def report_of(engine, review_id: str):
    with Session(engine) as session:
        return review_report(session, load_snapshot(engine), "caj-2006", review_id)


def item(report, commitment_id: str):
    return next(commitment for pillar in report.pillars for commitment in pillar.commitments
                if commitment.id == commitment_id)


def test_the_dialogues_meetings_since_the_plan_are_its_reviews_with_their_sources_loaded_once(engine):
    with Session(engine) as session:
        reviews = plan_reviews(session, "caj-2006")
    source = json.loads(DIALOGUE_MEETINGS_FILE.read_text())
    assert len(reviews) == len(source["meetings"]) == 11
    assert [review.date for review in reviews] == sorted(review.date for review in reviews)
    assert reviews[0].id == FM2 and reviews[0].date == date(2006, 6, 5)  # the adoption itself, nothing before
    by_id = {review.id: review for review in reviews}
    assert by_id[FM3].title == "3rd Foreign Ministers' Meeting" and by_id[FM3].place == "Tashkent"
    assert by_id[FM3].source_url == "https://www.mofa.go.jp/region/europe/dialogue/fm3_1008/jp.html"
    assert by_id["caj-2006-senior-officials-13"].date == date(2018, 11, 26)
    assert all(review.source_url and review.source_url.startswith("http") for review in reviews)
    assert load_dialogue_meetings(engine, NOW) == 0  # a second start adds nothing
    with Session(engine) as session:
        assert len(plan_reviews(session, "caj-2006")) == 11


def test_a_report_as_of_after_the_review_is_not_in_it_and_a_back_dated_one_is(engine):
    """The rule: a report counts at a review dated D when its as_of is on or
    before D, whenever it was recorded (all these are recorded in 2026)."""
    back_dated = report(engine, FIRST, "implementation", "2009-01-15", summary="Training began in 2009.")
    closed_later = report(engine, FIRST, "closed", "2011-05-01")
    after_the_meeting = report(engine, SECOND, "implementation", "2010-08-08")  # the day after FM3

    at_fm3 = report_of(engine, FM3)
    first, second = item(at_fm3, FIRST), item(at_fm3, SECOND)
    assert (first.status, first.status_source, first.last_report.id) == ("implementation", "report", back_dated)
    assert first.last_report.summary == "Training began in 2009."
    assert (second.status, second.status_source, second.last_report) == ("pipeline", "plan_text", None)
    shown = {commitment.last_report.id for pillar in at_fm3.pillars for commitment in pillar.commitments
             if commitment.last_report}
    assert closed_later not in shown and after_the_meeting not in shown

    at_som11 = report_of(engine, SOM11)
    assert item(at_som11, FIRST).last_report.id == closed_later and item(at_som11, FIRST).status == "closed"
    assert item(at_som11, SECOND).last_report.id == after_the_meeting


def test_a_correction_replaces_the_report_it_supersedes_at_every_review(engine):
    wrong = report(engine, FIRST, "closed", "2009-01-15", summary="Mistyped status.")
    right = report(engine, FIRST, "implementation", "2009-01-15", supersedes=wrong)
    assert item(report_of(engine, FM3), FIRST).last_report.id == right


def test_a_correction_dated_after_the_review_still_withdraws_the_report_it_corrects(engine):
    """The correction itself is about a later day, so it does not count at
    FM3; but the report it corrects was wrong, so it does not count either."""
    earlier = report(engine, FIRST, "implementation", "2008-03-01")
    wrong = report(engine, FIRST, "closed", "2009-01-15", summary="Closed too early.")
    assert item(report_of(engine, FM3), FIRST).last_report.id == wrong
    report(engine, FIRST, "implementation", "2012-02-01", supersedes=wrong)
    at_fm3 = item(report_of(engine, FM3), FIRST)
    assert (at_fm3.status, at_fm3.last_report.id) == ("implementation", earlier)


def test_on_a_tie_of_as_of_the_later_reported_holds_at_the_review_then_the_later_inserted(engine):
    """The current-status rule's order, as the database applies it for a review's date."""
    reported_later = report(engine, FIRST, "closed", "2009-01-15", now=datetime(2026, 11, 20, tzinfo=UTC))
    report(engine, FIRST, "suspended", "2009-01-15", now=datetime(2026, 11, 10, tzinfo=UTC))
    assert item(report_of(engine, FM3), FIRST).last_report.id == reported_later
    same_moment = [report(engine, SECOND, status, "2009-01-15") for status in ("implementation", "finalisation")]
    assert item(report_of(engine, FM3), SECOND).last_report.id == same_moment[-1]


def test_counts_by_pillar_and_what_changed_since_the_previous_review(engine):
    report(engine, FIRST, "implementation", "2009-01-15")
    report(engine, FIRST, "closed", "2011-05-01")
    report(engine, SECOND, "implementation", "2016-03-25")  # the day of SOM11 itself counts

    at_adoption = report_of(engine, FM2)
    assert at_adoption.previous_review is None
    assert all(not pillar.changes for pillar in at_adoption.pillars), "nothing reported by 2006-06-05"

    at_fm3 = report_of(engine, FM3)
    assert at_fm3.previous_review.id == FM2
    pillar_two = next(pillar for pillar in at_fm3.pillars if pillar.number == 2)
    assert [(c.commitment_id, c.from_status, c.to_status) for c in pillar_two.changes] == [
        (FIRST, "pipeline", "implementation")]
    assert sum(pillar_two.counts.values()) == len(pillar_two.commitments)
    assert sum(at_fm3.counts.values()) == sum(len(pillar.commitments) for pillar in at_fm3.pillars) == 111

    at_som11 = report_of(engine, SOM11)
    assert at_som11.previous_review.id == FM3
    changes = {(c.commitment_id, c.from_status, c.to_status) for p in at_som11.pillars for c in p.changes}
    assert changes == {(FIRST, "implementation", "closed"), (SECOND, "pipeline", "implementation")}
    assert at_som11.counts["closed"] == at_fm3.counts["closed"] + 1


def requests_event(kind: str, data: dict):
    return new_event(type=kind, source=REQUESTS_SOURCE, data=data, subject=data.get("request_id"))


def test_requests_and_activations_so_far_from_the_read_model(engine):
    common = {"commitment_id": FIRST, "country": "TJ", "agency_id": "tj-mfa", "responsible_agencies": ["jica"]}
    events = [
        requests_event(REQUEST_SUBMITTED, common | {
            "request_id": "r-1", "condition_type": "on_request", "title": "Training", "submitted_at":
            "2010-07-01T10:00:00Z"}),
        requests_event(REQUEST_STATUS_CHANGED, common | {
            "request_id": "r-1", "from_status": "submitted", "to_status": "approved", "note": None,
            "changed_by_role": "coordinator", "changed_at": "2010-08-07T23:30:00Z"}),  # the day of FM3 (UTC)
        requests_event(OFFER_ACTIVATED, {
            "commitment_id": FIRST, "condition_type": "on_request", "countries": ["TJ"], "trigger": "request",
            "trigger_id": "r-1", "requesting_agency_id": "tj-mfa", "responsible_agencies": ["jica"],
            "activated_at": "2010-08-07T23:30:00Z"}),
        requests_event(REQUEST_SUBMITTED, common | {
            "request_id": "r-2", "country": "KG", "condition_type": "on_request", "title": "Later",
            "submitted_at": "2010-08-08T00:00:00Z"}),  # after FM3
    ]
    with Session(engine) as session:
        assert [handle_requests_event(session, event) for event in events] == ["processed"] * 4
        session.commit()
        assert len(session.exec(select(CommitmentActivityRow)).all()) == 4

    # A run of the same events in one batch (how the consumer applies a
    # backlog) adds the same rows, and ignores what the model does not keep.
    with Session(engine) as session:
        one_by_one = [tuple(row)[1:] for row in session.execute(
            select(*CommitmentActivityRow.__table__.columns).order_by("seq")).all()]
        stale = requests_event(REQUEST_STALE, {"request_id": "r-1"})
        assert handle_requests_event.handle_many(session, [*events[:2], stale, *events[2:]]) == \
            ["processed", "processed", "ignored", "processed", "processed"]
        rows = [tuple(row)[1:] for row in session.execute(
            select(*CommitmentActivityRow.__table__.columns).order_by("seq")).all()]
        session.rollback()
    assert rows == one_by_one * 2

    at_fm3 = item(report_of(engine, FM3), FIRST)
    assert (at_fm3.requests.total, at_fm3.requests.by_status) == (1, {"approved": 1})
    assert [(a.countries, a.activated_at) for a in at_fm3.activations] == [
        (["TJ"], datetime(2010, 8, 7, 23, 30, tzinfo=UTC))]
    at_som11 = item(report_of(engine, SOM11), FIRST)
    assert at_som11.requests.by_status == {"approved": 1, "submitted": 1}
    assert item(report_of(engine, FM2), FIRST).requests.total == 0


def test_the_csv_has_one_row_per_commitment(engine):
    report(engine, FIRST, "implementation", "2009-01-15", summary='Said "done", with a comma.')
    at_fm3 = report_of(engine, FM3)
    rows = list(csv.DictReader(io.StringIO(report_csv(at_fm3))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 111 and len({row["commitment_id"] for row in rows}) == 111
    first = next(row for row in rows if row["commitment_id"] == FIRST)
    assert (first["status"], first["previous_status"], first["changed"]) == ("implementation", "pipeline", "yes")
    assert first["last_report_summary"] == 'Said "done", with a comma.' and first["review_date"] == "2010-08-07"


def test_recording_a_review_coordinators_only_on_a_known_plan_not_before_it(engine):
    snapshot = load_snapshot(engine)
    body = ReviewCreate(title="17th Senior Officials' Meeting", date=date(2026, 11, 20), place="Tashkent")
    with Session(engine) as session:
        with pytest.raises(Forbidden):
            record_review(session, principal=PARTNER, snapshot=snapshot, plan_id="caj-2006", body=body, now=NOW)
        with pytest.raises(NotFound):
            record_review(session, principal=COORDINATOR, snapshot=snapshot, plan_id="nope", body=body, now=NOW)
        early = body.model_copy(update={"date": date(2006, 6, 4)})
        with pytest.raises(Invalid) as refused:
            record_review(session, principal=COORDINATOR, snapshot=snapshot, plan_id="caj-2006", body=early, now=NOW)
        assert refused.value.reason == "date_before_plan"
        recorded = record_review(session, principal=COORDINATOR, snapshot=snapshot, plan_id="caj-2006", body=body,
                                 now=NOW)
        session.commit()
        assert session.get(ReviewMeetingRow, recorded.id).recorded_by_key_id == COORDINATOR.key_id
    assert report_of(engine, recorded.id).previous_review.id == "caj-2006-senior-officials-16"


def test_rendered_reports_are_kept_by_key_and_the_least_recently_used_go_first():
    cache = ReviewReportCache(size=2)
    renders: list[str] = []

    def render(name: str):
        return lambda: renders.append(name) or name.encode()

    assert cache.get_or_render(("a",), render("a")) == b"a"
    assert cache.get_or_render(("a",), render("a again")) == b"a", "kept: not rendered again"
    cache.get_or_render(("b",), render("b"))
    cache.get_or_render(("a",), render("a again"))  # a is now the most recently used
    cache.get_or_render(("c",), render("c"))  # b goes
    assert cache.get_or_render(("b",), render("b again")) == b"b again"
    assert renders == ["a", "b", "c", "b again"]


def test_what_a_report_is_computed_from_moves_with_a_report_an_activity_and_a_meeting(engine):
    with Session(engine) as session:
        first = report_inputs(session, "caj-2006")
    report(engine, FIRST, "implementation", "2009-01-15")
    with Session(engine) as session:
        second = report_inputs(session, "caj-2006")
    assert second != first
    with Session(engine) as session:
        assert handle_requests_event(session, requests_event(OFFER_ACTIVATED, {
            "commitment_id": FIRST, "condition_type": "on_request", "countries": ["TJ"], "trigger": "request",
            "trigger_id": "r-inputs", "responsible_agencies": ["jica"], "activated_at": "2010-01-01T00:00:00Z"}))
        session.commit()
        third = report_inputs(session, "caj-2006")
    assert third != second
    with Session(engine) as session:
        record_review(session, principal=COORDINATOR, snapshot=load_snapshot(engine), plan_id="caj-2006",
                      body=ReviewCreate(title="A review", date=date(2020, 1, 1), place="Online"), now=NOW)
        session.commit()
        assert report_inputs(session, "caj-2006") != third
