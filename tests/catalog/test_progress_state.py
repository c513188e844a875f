"""Progress in the catalog's database and snapshot, on SQLite and PostgreSQL:
what the sync publishes, how the snapshot follows a report, and staleness
judged on a clock the test sets."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import Session, select

from catalog_service.models import CommitmentRow, ProgressReportRow
from catalog_service.plan_files import DEFAULT_PLAN_FILES, load_plan_file
from catalog_service.reporting import ProgressCreate, new_report_id, record_report
from catalog_service.router import CommitmentQuery, render_commitment_page
from catalog_service.snapshot import CommitmentFilter, load_snapshot, refresh_snapshot
from catalog_service.sync import sync_plans
from shared.contracts.catalog import COMMITMENT_PUBLISHED, CommitmentPublished
from shared.db import make_engine
from shared.errors import Invalid
from shared.events import from_json
from shared.identity import Principal
from shared.messaging_models import OutboxMessage
from shared.migrations import upgrade

SYNTHETIC = Path(__file__).parent / "fixtures" / "synthetic-plan-2030.yaml"
COORDINATOR = Principal(key_id="0" * 16, role="coordinator", agency_id=None, country=None)
NOW = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(database_url):
    upgrade("catalog_service", database_url)
    engine = make_engine(database_url)
    sync_plans(engine, [load_plan_file(SYNTHETIC)], clock=lambda: NOW - timedelta(days=400))
    yield engine
    engine.dispose()


def report(engine, commitment_id: str, status: str, *, as_of: date, now: datetime = NOW) -> str:
    body = ProgressCreate(status=status, as_of=as_of, summary="Reported in a test.")
    with Session(engine) as session:
        recorded = record_report(session, principal=COORDINATOR, commitment_id=commitment_id, body=body,
                                 report_id=new_report_id(), now=now)
        session.commit()
    return recorded.report.id


def published(engine) -> list[CommitmentPublished]:
    with Session(engine) as session:
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.event_type == COMMITMENT_PUBLISHED)
                            .order_by(OutboxMessage.id)).all()
    return [CommitmentPublished.model_validate(from_json(row.envelope).get_data()) for row in rows]


def test_the_sync_publishes_progress_and_once_more_for_records_published_without_it(engine):
    first = published(engine)
    assert len(first) == 3 and all(record.progress is not None for record in first)
    assert {record.progress.source for record in first if record.progress} == {"plan_text"}
    by_id = {record.commitment.id: record for record in first}
    for record in first:
        assert record.progress is not None and record.progress.as_of == date(2030, 1, 15)
        assert record.progress.status == {1: "pipeline", 2: "implementation", 4: "closed"}[
            record.commitment.status.code]

    # As a database migrated from before progress was tracked: records without it.
    with Session(engine) as session:
        session.execute(update(CommitmentRow).values(progress=None))
        session.commit()
    again = sync_plans(engine, [load_plan_file(SYNTHETIC)])
    assert sorted(again.republished) == sorted(by_id) and not again.updated and not again.created
    republished = published(engine)[3:]
    assert [record.revision for record in republished] == [2, 2, 2]
    assert all(record.progress == by_id[record.commitment.id].progress for record in republished)

    third = sync_plans(engine, [load_plan_file(SYNTHETIC)])
    assert third.published == 0 and third.unchanged == 3


def test_a_changed_commitment_is_published_with_the_progress_its_reports_give(engine, tmp_path):
    report_id = report(engine, "synthetic-2030-1-0-01", "implementation", as_of=date(2031, 2, 1))
    text = SYNTHETIC.read_text().replace("title: ", "title: Revised ", 1)
    (tmp_path / SYNTHETIC.name).write_text(text)
    (tmp_path / "synthetic-plan-2030.txt").write_bytes((SYNTHETIC.parent / "synthetic-plan-2030.txt").read_bytes())
    changed = load_plan_file(tmp_path / SYNTHETIC.name)
    # Only the plan's header changed: no commitment is published again.
    assert sync_plans(engine, [changed]).published == 0

    with Session(engine) as session:
        session.execute(update(CommitmentRow).where(CommitmentRow.id == "synthetic-2030-1-0-01")
                        .values(content_hash="changed elsewhere"))
        session.commit()
    assert sync_plans(engine, [changed]).updated == ["synthetic-2030-1-0-01"]
    latest = published(engine)[-1]
    assert latest.progress is not None and latest.progress.report_id == report_id
    assert latest.revision == 3  # created, reported on, changed


def test_a_report_moves_the_revision_and_the_snapshot_rebuilds_only_that_commitment(engine):
    snapshot = load_snapshot(engine)
    snapshot.remember_page(b"limit=5", (b"{}", '"e"'))
    assert refresh_snapshot(engine, snapshot) is snapshot, "nothing changed"
    report_id = report(engine, "synthetic-2030-1-0-01", "closed", as_of=date(2031, 2, 1))
    with Session(engine) as session:
        assert session.get(CommitmentRow, "synthetic-2030-1-0-01").revision == 2
        assert len(session.exec(select(ProgressReportRow)).all()) == 1

    renewed = refresh_snapshot(engine, snapshot)
    assert renewed is not snapshot and renewed.page_cache == {}
    assert renewed.fingerprint != snapshot.fingerprint
    view = renewed.by_id["synthetic-2030-1-0-01"]
    assert (view.read.progress.status, view.read.progress.report_id, view.read.revision) == ("closed", report_id, 2)
    assert b'"report_id":"' + report_id.encode() in view.json
    for other in ("synthetic-2030-1-0-02", "synthetic-2030-2-0-01"):
        assert renewed.by_id[other] is snapshot.by_id[other]
    assert renewed.plans is snapshot.plans
    assert refresh_snapshot(engine, renewed) is renewed


def test_staleness_follows_the_clock_from_the_last_report(engine):
    """Judged at query time: stale exactly `stale_after` after the last report;
    never reported, counted from the plan's adoption (2006-06-05 for the
    2006 plan's commitments in implementation by its text)."""
    sync_plans(engine, [load_plan_file(SYNTHETIC), load_plan_file(DEFAULT_PLAN_FILES[0])])
    commitment_id = "synthetic-2030-1-0-01"
    report(engine, commitment_id, "implementation", as_of=date(2031, 2, 20), now=NOW)
    snapshot = load_snapshot(engine, stale_after=timedelta(days=180))

    def stale_ids(now: datetime) -> list[str]:
        return [view.read.id for view in snapshot.query(CommitmentFilter(stale=True, now=now))]

    just_before, at = NOW + timedelta(days=180) - timedelta(seconds=1), NOW + timedelta(days=180)
    assert commitment_id not in stale_ids(just_before)
    assert commitment_id in stale_ids(at)
    assert snapshot.stale_count(at) == snapshot.stale_count(just_before) + 1, "a page cached before is not reused"
    fresh = [view.read.id for view in snapshot.query(CommitmentFilter(stale=False, now=just_before))]
    assert commitment_id in fresh

    never_reported = [view.read.id for view in snapshot.commitments
                      if view.read.progress.status == "implementation" and view.read.id != commitment_id]
    assert len(never_reported) > 10
    assert set(never_reported) <= set(stale_ids(datetime(2006, 12, 2, tzinfo=UTC)))
    assert stale_ids(datetime(2006, 12, 1, 23, 59, tzinfo=UTC)) == []

    query = CommitmentQuery(stale=True, limit=100)
    before_page, before_etag = render_commitment_page(snapshot, query, _Params({"stale": "true"}), now=just_before)
    after_page, after_etag = render_commitment_page(snapshot, query, _Params({"stale": "true"}), now=at)
    assert commitment_id.encode() not in before_page and commitment_id.encode() in after_page
    assert before_etag != after_etag


class _Params(dict):
    """The query parameters as render_commitment_page reads them."""

    def multi_items(self):
        return list(self.items())


def test_as_of_may_be_today_anywhere_but_not_later(engine):
    """At 20:00 UTC it is already tomorrow in Tokyo (UTC+9): a report as of
    that day is not from the future; the day after is."""
    evening = datetime(2031, 3, 1, 20, 0, tzinfo=UTC)
    report(engine, "synthetic-2030-1-0-01", "implementation", as_of=date(2031, 3, 2), now=evening)
    with pytest.raises(Invalid) as refused:
        report(engine, "synthetic-2030-1-0-01", "implementation", as_of=date(2031, 3, 3), now=evening)
    assert refused.value.reason == "as_of_in_future"
    with Session(engine) as session:
        assert len(session.exec(select(ProgressReportRow)).all()) == 1
