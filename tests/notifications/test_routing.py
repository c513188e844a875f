"""Routing rules as data, and one notification per (event, recipient)."""

import asyncio
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from sqlalchemy import event as sa_event
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, select

from catalog_service.plan_files import DEFAULT_PLAN_FILES, load_plan_file
from notifications_service.consumers import make_handler
from notifications_service.models import DeliveryRow, NotificationRow, WebhookEndpointRow
from notifications_service.routing import RoutingRules, load_rules, recipients_for
from shared.contracts.catalog import CATALOG_SOURCE, COMMITMENT_PUBLISHED, CommitmentPublished
from shared.contracts.requests import (
    OFFER_ACTIVATED,
    OFFER_INTEREST_REGISTERED,
    REQUEST_STATUS_CHANGED,
    REQUEST_SUBMITTED,
    REQUESTS_SOURCE,
)
from shared.db import make_engine
from shared.events import new_event
from shared.group_commit import GroupCommitWriter
from shared.migrations import upgrade

RULES = load_rules()
BORDER = next(c for c in load_plan_file(DEFAULT_PLAN_FILES[0]).commitments if c.id == "caj-2006-2-1-04")
COUNTRY_AGENCIES = {"KZ": ["kz-mfa"], "KG": ["kg-mfa"], "TJ": ["tj-mfa", "tj-border-service"], "UZ": ["uz-mfa"]}


def agencies_of(country):
    return COUNTRY_AGENCIES.get(country, [])


def test_who_hears_what():
    activated = {"responsible_agencies": ["jp-mofa", "jica"], "requesting_agency_id": "tj-border-service"}
    assert recipients_for(RULES, OFFER_ACTIVATED, activated, agencies_of) == [
        "jp-mofa", "jica", "tj-border-service", "coordinators"]
    submitted = {"responsible_agencies": ["jica"], "agency_id": "tj-border-service"}
    assert recipients_for(RULES, REQUEST_SUBMITTED, submitted, agencies_of) == ["coordinators", "jica"]
    changed = {"agency_id": "tj-border-service", "responsible_agencies": ["jica"]}
    assert recipients_for(RULES, REQUEST_STATUS_CHANGED, changed, agencies_of) == ["tj-border-service", "coordinators"]
    interest = {"required_countries": ["KZ", "KG", "TJ", "UZ"]}
    assert recipients_for(RULES, OFFER_INTEREST_REGISTERED, interest, agencies_of) == [
        "kz-mfa", "kg-mfa", "tj-border-service", "tj-mfa", "uz-mfa"]
    assert recipients_for(RULES, "org.caj-tracker.something.else.v1", activated, agencies_of) == []


def test_rules_are_checked_when_loaded():
    with pytest.raises(ValidationError, match="nobody publishes"):
        RoutingRules.model_validate({"rules": {"org.caj-tracker.made.up.v1": {"recipients": ["coordinators"]}}})
    with pytest.raises(ValidationError):
        RoutingRules.model_validate({"rules": {OFFER_ACTIVATED: {"recipients": ["everyone"]}}})


def test_one_notification_per_event_and_recipient(database_url):
    upgrade("notifications_service", database_url)
    engine = make_engine(database_url)
    handler = make_handler(RULES, agencies_of)
    event = new_event(type=OFFER_ACTIVATED, source=REQUESTS_SOURCE, subject="caj-2006-2-1-04", data={
        "commitment_id": "caj-2006-2-1-04", "responsible_agencies": ["jp-mofa", "jica"],
        "requesting_agency_id": "tj-border-service", "countries": ["TJ"],
    })
    try:
        with Session(engine) as session:
            assert handler(session, event) == "processed"
            session.commit()
        with Session(engine) as session, pytest.raises(IntegrityError):
            handler(session, event)  # the same event again: the unique key refuses a second row
            session.commit()
        with Session(engine) as session:
            recipients = sorted(session.exec(select(NotificationRow.recipient)).all())
        assert recipients == ["coordinators", "jica", "jp-mofa", "tj-border-service"]
    finally:
        engine.dispose()


def test_a_run_of_events_handled_together_makes_what_one_at_a_time_makes(database_url):
    """`handle_many` (the consumer's path for a backlog) against the handler
    called once per event, on the same events, directory and webhooks: the
    same notifications and deliveries, in the order of the events, with an
    agency the catalog names mid-run counted from then on."""
    upgrade("notifications_service", database_url)
    engine = make_engine(database_url)
    handler = make_handler(RULES, agencies_of)
    catalog_agency = BORDER.responsible_agencies[0].model_copy(update={"id": "kz-catalog-agency", "country": "KZ"})
    learned = CommitmentPublished(revision=2, updated_at=datetime.now(UTC),
                                  commitment=BORDER.model_copy(update={"responsible_agencies": [catalog_agency]}))
    interest = {"commitment_id": "caj-2006-2-3-01", "required_countries": ["KZ", "TJ"]}
    events = [
        new_event(type=OFFER_ACTIVATED, source=REQUESTS_SOURCE, subject="caj-2006-2-1-04", data={
            "commitment_id": "caj-2006-2-1-04", "responsible_agencies": ["jica"],
            "requesting_agency_id": "tj-border-service", "countries": ["TJ"]}),
        new_event(type="org.caj-tracker.something.else.v1", source=REQUESTS_SOURCE, data={}),
        new_event(type=OFFER_INTEREST_REGISTERED, source=REQUESTS_SOURCE, data=interest),
        new_event(type=COMMITMENT_PUBLISHED, source=CATALOG_SOURCE, subject=BORDER.id,
                  data=learned.model_dump(mode="json")),
        new_event(type=OFFER_INTEREST_REGISTERED, source=REQUESTS_SOURCE, data=interest),
        new_event(type=REQUEST_STATUS_CHANGED, source=REQUESTS_SOURCE, subject="r-1", data={
            "agency_id": "kg-mfa", "responsible_agencies": ["jica"]}),
    ]
    activated, _, first_interest, _, second_interest, changed = (event.get_id() for event in events)
    expected_notifications = {
        (activated, "jica"), (activated, "tj-border-service"), (activated, "coordinators"),
        (first_interest, "kz-mfa"), (first_interest, "tj-mfa"),  # tj-border-service takes offer activations only
        (second_interest, "kz-mfa"), (second_interest, "kz-catalog-agency"), (second_interest, "tj-mfa"),
        (changed, "kg-mfa"), (changed, "coordinators"),
    }
    expected_deliveries = {(activated, "tj-border-service"), (changed, "kg-mfa")}

    def made(session) -> tuple[set, set, list]:
        notifications = session.exec(select(NotificationRow)).all()
        by_id = {row.id: row for row in notifications}
        deliveries = {(by_id[row.notification_id].event_id, row.agency_id)
                      for row in session.exec(select(DeliveryRow)).all()}
        ordered = [row.event_id for row in sorted(notifications, key=lambda row: row.created_at)]
        return {(row.event_id, row.recipient) for row in notifications}, deliveries, ordered

    try:
        with Session(engine) as session:
            session.add(WebhookEndpointRow(agency_id="tj-border-service", url="https://tj.example/hook",
                                           event_types=[OFFER_ACTIVATED], secret="whsec_x"))
            session.add(WebhookEndpointRow(agency_id="kg-mfa", url="https://kg.example/hook", secret="whsec_y"))
            session.commit()
        results = {}
        for mode in ("together", "one at a time"):
            with Session(engine) as session:
                if mode == "together":
                    outcomes = handler.handle_many(session, events)
                else:
                    outcomes = [handler(session, event) for event in events]
                results[mode] = (outcomes, *made(session))
                session.rollback()
        assert results["together"][:3] == results["one at a time"][:3]
        outcomes, notifications, deliveries, ordered = results["together"]
        assert outcomes == ["processed", "ignored", "processed", "processed", "processed", "processed"]
        assert notifications == expected_notifications
        assert deliveries == expected_deliveries
        event_order = [event.get_id() for event in events]
        assert ordered == sorted(ordered, key=event_order.index), "created in the order of the events"
    finally:
        engine.dispose()


def created(event_type: str) -> float:
    return REGISTRY.get_sample_value("caj_notifications_created_total", {"event_type": event_type}) or 0.0


async def test_notifications_are_counted_once_committed_never_for_a_failed_commit(database_url):
    """Routing runs inside the group commit: a later operation in the same
    transaction can make its commit fail, and the consumer rolls a run back
    when it fails. Neither counts; a committed run counts each notification
    exactly once."""
    upgrade("notifications_service", database_url)
    engine = make_engine(database_url)
    writer = GroupCommitWriter(engine)
    writer.start()
    handler = make_handler(RULES, agencies_of)

    def activated():  # four recipients: jp-mofa, jica, tj-border-service, coordinators
        return new_event(type=OFFER_ACTIVATED, source=REQUESTS_SOURCE, subject="caj-2006-2-1-04", data={
            "commitment_id": "caj-2006-2-1-04", "responsible_agencies": ["jp-mofa", "jica"],
            "requesting_agency_id": "tj-border-service", "countries": ["TJ"]})

    def fail_the_commit(session: Session) -> None:
        @sa_event.listens_for(session, "before_commit")
        def refuse(session: Session) -> None:
            if not session.in_nested_transaction():  # the transaction's commit, not a savepoint's
                raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    try:
        before = created(OFFER_ACTIVATED)
        routed = writer.run(lambda session: handler(session, activated()))
        results = await asyncio.gather(routed, writer.run(fail_the_commit), return_exceptions=True)
        assert all(isinstance(result, OperationalError) for result in results), results
        assert created(OFFER_ACTIVATED) == before, "counted for a commit that failed"

        with Session(engine) as session:  # the consumer's own transaction, rolled back
            assert handler(session, activated()) == "processed"
            session.rollback()
        assert created(OFFER_ACTIVATED) == before, "counted for a rolled-back run"

        assert await writer.run(lambda session: handler(session, activated())) == "processed"
        assert created(OFFER_ACTIVATED) == before + 4
        with Session(engine) as session:
            assert len(session.exec(select(NotificationRow)).all()) == 4
    finally:
        await writer.stop()
        engine.dispose()
