"""Syncing plan files into the catalog database publishes exactly what
changed, through the outbox, on SQLite and PostgreSQL."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from sqlmodel import Session, select

from catalog_service.models import CommitmentRow, PlanRow
from catalog_service.plan_files import DEFAULT_PLAN_FILES, PlanFileError, load_plan_file
from catalog_service.snapshot import CommitmentFilter, load_snapshot
from catalog_service.sync import sync_plans
from shared.contracts.catalog import COMMITMENT_PUBLISHED, COMMITMENT_REMOVED, CommitmentPublished
from shared.db import make_engine
from shared.events import from_json
from shared.messaging_models import OutboxMessage
from shared.migrations import upgrade

FIXTURES = Path(__file__).parent / "fixtures"
SYNTHETIC = FIXTURES / "synthetic-plan-2030.yaml"
PLAN_2006 = DEFAULT_PLAN_FILES[0]


@pytest.fixture
def catalog_engine(database_url):
    upgrade("catalog_service", database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def outbox_events(engine):
    with Session(engine) as session:
        rows = session.exec(select(OutboxMessage).order_by(OutboxMessage.id)).all()
    return [from_json(row.envelope) for row in rows], rows


def test_first_sync_publishes_every_commitment_and_a_second_sync_nothing(catalog_engine):
    plan = load_plan_file(PLAN_2006)
    report = sync_plans(catalog_engine, [plan])
    # 111: the plan's entries, with the review at SOM and four split sentences (see test_plan_data.test_counts).
    assert len(report.created) == len(plan.commitments) == 111
    events, rows = outbox_events(catalog_engine)
    assert len(events) == 111
    assert {row.message_key for row in rows} == {c.id for c in plan.commitments}
    assert {row.topic for row in rows} == {"catalog.commitments"}
    first = CommitmentPublished.model_validate(events[0].get_data())
    assert events[0].get_type() == COMMITMENT_PUBLISHED and first.revision == 1
    assert events[0].get_subject() == first.commitment.id
    assert {event.get_time() for event in events} == {first.updated_at}, "every event carries the sync's time"

    again = sync_plans(catalog_engine, [load_plan_file(PLAN_2006)])
    assert again.published == 0 and again.unchanged == 111
    assert len(outbox_events(catalog_engine)[0]) == 111


def test_a_second_plan_loads_beside_the_2006_plan(catalog_engine):
    report = sync_plans(catalog_engine, [load_plan_file(PLAN_2006), load_plan_file(SYNTHETIC)])
    # The 2006 plan's 111 entries and the synthetic plan's 3.
    assert len(report.created) == 114
    snapshot = load_snapshot(catalog_engine)
    assert list(snapshot.plans) == ["caj-2006", "synthetic-2030"]
    assert snapshot.plans["synthetic-2030"].commitments == 3
    assert snapshot.plans["synthetic-2030"].commitments_by_condition == {
        "joint_interest": 1, "none": 1, "on_request": 1,
    }
    kg_water = snapshot.query(CommitmentFilter(plan_id="synthetic-2030", requestable_by="KG", condition="on_request"))
    assert [view.read.id for view in kg_water] == ["synthetic-2030-1-0-01"]


def _edited_copy(tmp_path: Path, edit) -> Path:
    """A copy of the synthetic plan with `edit(document)` applied."""
    shutil.copy(FIXTURES / "synthetic-plan-2030.txt", tmp_path / "synthetic-plan-2030.txt")
    document = yaml.safe_load(SYNTHETIC.read_text())
    edit(document)
    target = tmp_path / "synthetic-plan-2030.yaml"
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target


def test_a_changed_commitment_gets_a_new_revision_and_a_removed_one_a_tombstone(catalog_engine, tmp_path):
    sync_plans(catalog_engine, [load_plan_file(SYNTHETIC)])

    def change_and_remove(document):
        document["commitments"][0]["status"] = {"code": 2, "name": "Implementation"}
        del document["commitments"][1]

    report = sync_plans(catalog_engine, [load_plan_file(_edited_copy(tmp_path, change_and_remove))])
    assert report.updated == ["synthetic-2030-1-0-01"]
    assert report.removed == ["synthetic-2030-1-0-02"]
    assert report.created == [] and report.unchanged == 1

    events, rows = outbox_events(catalog_engine)
    changed, removed = events[-2:]
    assert changed.get_type() == COMMITMENT_PUBLISHED
    data = CommitmentPublished.model_validate(changed.get_data())
    assert data.revision == 2 and data.commitment.status.code == 2
    assert removed.get_type() == COMMITMENT_REMOVED and removed.get_data() is None
    assert rows[-1].message_key == "synthetic-2030-1-0-02"
    assert json.loads(rows[-1].envelope).get("data") is None
    with Session(catalog_engine) as session:
        assert session.get(CommitmentRow, "synthetic-2030-1-0-02") is None
        assert session.get(CommitmentRow, "synthetic-2030-1-0-01").revision == 2


def test_a_plan_dropped_from_the_configuration_is_removed_with_tombstones(catalog_engine):
    sync_plans(catalog_engine, [load_plan_file(PLAN_2006), load_plan_file(SYNTHETIC)])
    report = sync_plans(catalog_engine, [load_plan_file(PLAN_2006)])
    assert sorted(report.removed) == ["synthetic-2030-1-0-01", "synthetic-2030-1-0-02", "synthetic-2030-2-0-01"]
    with Session(catalog_engine) as session:
        assert [row.id for row in session.exec(select(PlanRow)).all()] == ["caj-2006"]


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda d: d["commitments"][0]["source"].update(start=71), "is not the source's text"),
        (lambda d: d["plan"].update(source_sha256="0" * 64), "does not match source_sha256"),
        (lambda d: d["commitments"][0]["responsible_agencies"].append({"id": "nobody", "inferred": True}),
         "unknown agency nobody"),
        (lambda d: d["commitments"][0]["condition"].update(eligible_countries=["XX"]), "not a valid plan file"),
        (lambda d: d["commitments"][0].update(pillar=7), "pillar 7"),
        (lambda d: d["commitments"].append(dict(d["commitments"][0])), "duplicate commitment id"),
        (lambda d: d["commitments"][0]["condition"].update(text="if asked nicely"), "condition text is not part"),
        # A part of a split sentence lies inside that sentence.
        (lambda d: d["commitments"][0].update(part_of={"start": 0, "end": 1}), "is not inside the sentence"),
        # Only an agreement's parties may be outside the Dialogue: interest is shown by request.
        (lambda d: d["commitments"][0]["condition"].update(type="joint_interest", required_countries=["KZ", "TM"]),
         "TM outside the Dialogue can only be parties to an agreement"),
        (lambda d: d["commitments"][0]["condition"].update(type="regional_agreement", required_countries=["tm"]),
         "not a valid plan file"),
    ],
)
def test_a_bad_plan_file_is_refused_with_its_reason_and_changes_nothing(catalog_engine, tmp_path, edit, reason):
    sync_plans(catalog_engine, [load_plan_file(SYNTHETIC)])
    before = outbox_events(catalog_engine)[1]
    with pytest.raises(PlanFileError, match=reason):
        load_plan_file(_edited_copy(tmp_path, edit))
    assert len(outbox_events(catalog_engine)[1]) == len(before)
