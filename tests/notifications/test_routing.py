"""Routing rules as data, and one notification per (event, recipient)."""

import pytest
from pydantic import ValidationError
from sqlmodel import Session, select

from notifications_service.consumers import make_handler
from notifications_service.models import NotificationRow
from notifications_service.routing import RoutingRules, load_rules, recipients_for
from shared.contracts.requests import (
    OFFER_ACTIVATED,
    OFFER_INTEREST_REGISTERED,
    REQUEST_STATUS_CHANGED,
    REQUEST_SUBMITTED,
    REQUESTS_SOURCE,
)
from shared.db import make_engine
from shared.events import new_event
from shared.migrations import upgrade

RULES = load_rules()
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
        with Session(engine) as session, pytest.raises(Exception):
            handler(session, event)  # the same event again: the unique key refuses a second row
            session.commit()
        with Session(engine) as session:
            recipients = sorted(session.exec(select(NotificationRow.recipient)).all())
        assert recipients == ["coordinators", "jica", "jp-mofa", "tj-border-service"]
    finally:
        engine.dispose()


def test_a_run_of_events_handled_together_makes_what_one_at_a_time_makes(database_url):
    """`handle_many` (the consumer's path for a backlog) against the handler
    called once per event, on the same events and the same directory."""
    upgrade("notifications_service", database_url)
    engine = make_engine(database_url)
    handler = make_handler(RULES, agencies_of)
    events = [
        new_event(type=OFFER_ACTIVATED, source=REQUESTS_SOURCE, subject="caj-2006-2-1-04", data={
            "commitment_id": "caj-2006-2-1-04", "responsible_agencies": ["jica"],
            "requesting_agency_id": "tj-border-service", "countries": ["TJ"]}),
        new_event(type="org.caj-tracker.something.else.v1", source=REQUESTS_SOURCE, data={}),
        new_event(type=OFFER_INTEREST_REGISTERED, source=REQUESTS_SOURCE, subject="caj-2006-2-3-01", data={
            "commitment_id": "caj-2006-2-3-01", "required_countries": ["KZ", "TJ"]}),
        new_event(type=REQUEST_STATUS_CHANGED, source=REQUESTS_SOURCE, subject="r-1", data={
            "agency_id": "kg-mfa", "responsible_agencies": ["jica"]}),
    ]

    def made(session) -> list[tuple[str, str]]:
        return sorted((row.event_id, row.recipient) for row in session.exec(select(NotificationRow)).all())

    try:
        with Session(engine) as session:
            outcomes = handler.handle_many(session, events)
            together = made(session)
            session.rollback()
        with Session(engine) as session:
            one_at_a_time = [handler(session, event) for event in events]
            assert made(session) == together
            session.rollback()
        assert outcomes == one_at_a_time == ["processed", "ignored", "processed", "processed"]
        # Offer activated: jica, tj-border-service, coordinators. Interest:
        # kz-mfa, tj-mfa, tj-border-service. Status changed: kg-mfa, coordinators.
        assert len(together) == 8
    finally:
        engine.dispose()
