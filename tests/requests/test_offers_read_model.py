"""The offers read model follows catalog.commitments: new states, newer
revisions, stale revisions ignored, tombstones; it lives in the database, so
it survives restarts."""

from datetime import UTC, datetime

import pytest
from sqlmodel import Session, select

from catalog_service.plan_files import DEFAULT_PLAN_FILES, load_plan_file
from requests_service.consumers import handle_catalog_event
from requests_service.models import OfferActivationRow, OfferRecordRow, OfferRow
from requests_service.service import NewRequest, record_condition, submit_request
from shared.consumer import PoisonMessage
from shared.contracts.catalog import CATALOG_SOURCE, COMMITMENT_PUBLISHED, COMMITMENT_REMOVED, CommitmentPublished
from shared.contracts.requests import OFFER_ACTIVATED, OfferActivated
from shared.db import make_engine
from shared.errors import Invalid
from shared.events import from_json, new_event
from shared.identity import Principal
from shared.messaging_models import OutboxMessage
from shared.migrations import upgrade

PLAN_2006 = {c.id: c for c in load_plan_file(DEFAULT_PLAN_FILES[0]).commitments}
BORDER = PLAN_2006["caj-2006-2-1-04"]
# "on condition that there is an agreement by all the countries concerned"
NUCLEAR_ZONE = PLAN_2006["caj-2006-1-2-06"]
TAJIK_AGENCY = Principal(key_id="0" * 16, role="partner", agency_id="tj-border-service", country="TJ")
COORDINATOR = Principal(key_id="1" * 16, role="coordinator", agency_id=None, country=None)


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


def test_an_agreement_waits_for_every_party_the_text_names_outside_the_dialogue_too(engine):
    # The catalog's record of the offer names parties outside the Dialogue; the read model takes them.
    parties = list(NUCLEAR_ZONE.condition.required_countries)
    assert {"TM", "US"} <= set(parties) and not {"TM", "US"} & {"JP", "KZ", "KG", "TJ", "UZ", "AF"}
    record = CommitmentPublished(revision=1, updated_at=datetime.now(UTC), commitment=NUCLEAR_ZONE)
    assert apply(engine, new_event(type=COMMITMENT_PUBLISHED, source=CATALOG_SOURCE, subject=NUCLEAR_ZONE.id,
                                   data=record.model_dump(mode="json"))) == "processed"

    def agree(*countries: str) -> None:
        with Session(engine) as session:
            record_condition(session, principal=COORDINATOR, commitment_id=NUCLEAR_ZONE.id, kind="agreement",
                             reference="Treaty on a Nuclear-Weapon-Free Zone in Central Asia", parties=list(countries),
                             note=None)
            session.commit()

    def activated() -> set[str]:
        with Session(engine) as session:
            return set(session.exec(select(OfferActivationRow.country)
                                    .where(OfferActivationRow.commitment_id == NUCLEAR_ZONE.id)).all())

    def recorded() -> int:
        with Session(engine) as session:
            return len(session.exec(select(OfferRecordRow)).all())

    # The Dialogue's Central Asian members alone are not all the countries concerned.
    agree("KZ", "KG", "TJ", "UZ")
    assert activated() == set()
    # A party outside the Dialogue that the text concerns is accepted.
    agree("TM", "CN", "FR", "RU", "GB")
    assert activated() == set()
    # A party the text does not concern is refused, with the ones it does, and nothing is stored.
    with pytest.raises(Invalid) as refused:
        agree("IR", "US")
    assert refused.value.reason == "not_a_party"
    assert "IR" in (refused.value.detail or "") and "TM" in (refused.value.detail or "")
    assert recorded() == 2 and activated() == set()
    # The last party completes the agreement: it activates once, for every party.
    agree("US")
    assert activated() == set(parties)
    with Session(engine) as session:
        staged = [from_json(row.envelope) for row in session.exec(select(OutboxMessage)).all()
                  if row.event_type == OFFER_ACTIVATED]
    [activation] = [OfferActivated.model_validate(event.get_data()) for event in staged]
    assert set(activation.countries) == set(parties) and activation.trigger == "regional_agreement"
