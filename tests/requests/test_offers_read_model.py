"""The offers read model follows catalog.commitments: new states, newer
revisions, stale revisions ignored, tombstones; it lives in the database, so
it survives restarts."""

from datetime import UTC, datetime

import pytest
from sqlmodel import Session

from catalog_service.plan_files import DEFAULT_PLAN_FILES, load_plan_file
from requests_service.consumers import handle_catalog_event
from requests_service.models import OfferRow
from requests_service.service import NewRequest, submit_request
from shared.consumer import PoisonMessage
from shared.contracts.catalog import CATALOG_SOURCE, COMMITMENT_PUBLISHED, COMMITMENT_REMOVED, CommitmentPublished
from shared.db import make_engine
from shared.errors import Invalid
from shared.events import new_event
from shared.identity import Principal
from shared.migrations import upgrade

BORDER = next(c for c in load_plan_file(DEFAULT_PLAN_FILES[0]).commitments if c.id == "caj-2006-2-1-04")
TAJIK_AGENCY = Principal(key_id="0" * 16, role="partner", agency_id="tj-border-service", country="TJ")


def published(revision: int, **changes):
    commitment = BORDER.model_copy(update=changes)
    data = CommitmentPublished(revision=revision, updated_at=datetime.now(UTC), commitment=commitment)
    return new_event(type=COMMITMENT_PUBLISHED, source=CATALOG_SOURCE, subject=BORDER.id,
                     data=data.model_dump(mode="json"))


@pytest.fixture
def engine(database_url):
    upgrade("requests_service", database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def apply(engine, event) -> str:
    with Session(engine) as session:
        outcome = handle_catalog_event(session, event)
        session.commit()
        return outcome


def offer(engine) -> OfferRow:
    with Session(engine) as session:
        return session.get(OfferRow, BORDER.id)


def test_states_revisions_and_tombstones(engine):
    assert apply(engine, published(1)) == "processed"
    assert offer(engine).eligible_countries == ["TJ", "AF"] and offer(engine).revision == 1

    narrowed = BORDER.condition.model_copy(update={"eligible_countries": ["TJ"]})
    assert apply(engine, published(2, condition=narrowed)) == "processed"
    assert offer(engine).eligible_countries == ["TJ"]
    assert apply(engine, published(1)) == "ignored", "an older revision never overwrites a newer one"
    assert offer(engine).eligible_countries == ["TJ"]

    tombstone = new_event(type=COMMITMENT_REMOVED, source=CATALOG_SOURCE, subject=BORDER.id, data=None)
    assert apply(engine, tombstone) == "processed"
    assert offer(engine).removed is True
    with Session(engine) as session, pytest.raises(Invalid) as refused:
        submit_request(session, principal=TAJIK_AGENCY, new=NewRequest(BORDER.id, "Border posts", "x"))
    assert refused.value.reason == "unknown_commitment"

    assert apply(engine, published(3)) == "processed", "a commitment can come back"
    assert offer(engine).removed is False


def test_unknown_types_are_ignored_and_broken_states_refused(engine):
    assert apply(engine, new_event(type="org.caj-tracker.catalog.something-new.v1", source=CATALOG_SOURCE,
                                   subject=BORDER.id, data={"x": 1})) == "ignored"
    broken = new_event(type=COMMITMENT_PUBLISHED, source=CATALOG_SOURCE, subject=BORDER.id, data={"revision": "x"})
    with pytest.raises(PoisonMessage):
        apply(engine, broken)
