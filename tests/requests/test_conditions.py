"""The condition rules, without I/O: every condition type, every path."""

import pytest

from requests_service.conditions import (
    ALL_COUNTRIES,
    OfferTerms,
    accept_request,
    activation_by_record,
    allowed_transitions,
    refuse_request,
    transition_needs_note,
)

CA = ("KZ", "KG", "TJ", "UZ")
BORDER = OfferTerms("border", "on_request", ("TJ", "AF"), ())
SEMINAR = OfferTerms("seminar", "joint_interest", (), CA)
WATER = OfferTerms("water", "regional_agreement", (), CA)
TREES = OfferTerms("trees", "evidence", (), ())
STANDING = OfferTerms("standing", "none", (), ())


@pytest.mark.parametrize(
    ("offer", "country", "reason"),
    [
        (None, "TJ", "unknown_commitment"),
        (OfferTerms("gone", "on_request", ("TJ",), (), removed=True), "TJ", "unknown_commitment"),
        (STANDING, "TJ", "commitment_not_requestable"),
        (WATER, "KZ", "commitment_not_requestable"),
        (TREES, "KZ", "commitment_not_requestable"),
        (BORDER, "KZ", "country_not_eligible"),
        (BORDER, "JP", "country_not_eligible"),
        (SEMINAR, "AF", "country_not_eligible"),
        (BORDER, "TJ", None),
        (BORDER, "AF", None),
        (SEMINAR, "UZ", None),
    ],
)
def test_refusals(offer, country, reason):
    refusal = refuse_request(offer, "x", country)
    assert (refusal.reason if refusal else None) == reason


def test_on_request_activates_for_the_requesting_country_once():
    assert accept_request(BORDER, "TJ", activated=set(), interested=set()).activate_countries == ("TJ",)
    assert accept_request(BORDER, "TJ", activated={"TJ"}, interested=set()).activate_countries == ()
    assert accept_request(BORDER, "AF", activated={"TJ"}, interested=set()).activate_countries == ("AF",)
    assert accept_request(BORDER, "TJ", activated=set(), interested=set()).register_interest is False


def test_joint_interest_registers_each_country_and_activates_once_for_all():
    first = accept_request(SEMINAR, "KZ", activated=set(), interested=set())
    assert first.register_interest and first.activate_countries == ()
    repeat = accept_request(SEMINAR, "KZ", activated=set(), interested={"KZ"})
    assert not repeat.register_interest and repeat.activate_countries == ()
    last = accept_request(SEMINAR, "UZ", activated=set(), interested={"KZ", "KG", "TJ"})
    assert last.register_interest and last.activate_countries == CA
    after = accept_request(SEMINAR, "UZ", activated=set(CA), interested=set(CA))
    assert not after.register_interest and after.activate_countries == ()


@pytest.mark.parametrize("offer", [WATER, TREES, STANDING])
def test_requests_never_activate_other_conditions(offer):
    with pytest.raises(ValueError):
        accept_request(offer, "KZ", activated=set(), interested=set())


def test_agreement_activates_when_all_parties_are_recorded():
    assert activation_by_record(WATER, kind="agreement", recorded_parties={"KZ", "KG"}, activated=set()) == ()
    assert activation_by_record(WATER, kind="agreement", recorded_parties=set(CA), activated=set()) == CA
    assert activation_by_record(WATER, kind="agreement", recorded_parties=set(CA), activated=set(CA)) == ()
    with pytest.raises(ValueError):
        activation_by_record(WATER, kind="evidence", recorded_parties=set(), activated=set())


def test_an_agreement_with_parties_outside_the_dialogue_waits_for_them_all():
    zone = OfferTerms("zone", "regional_agreement", (), (*CA, "TM", "CN", "FR", "RU", "GB", "US"))
    assert activation_by_record(zone, kind="agreement", recorded_parties=set(CA), activated=set()) == ()
    assert activation_by_record(zone, kind="agreement", recorded_parties=set(zone.required_countries) - {"US"},
                                activated=set()) == ()
    everyone = set(zone.required_countries)
    assert activation_by_record(zone, kind="agreement", recorded_parties=everyone, activated=set()) == (
        zone.required_countries
    )


def test_evidence_activates_once():
    assert activation_by_record(TREES, kind="evidence", recorded_parties=set(), activated=set()) == (ALL_COUNTRIES,)
    assert activation_by_record(TREES, kind="evidence", recorded_parties=set(), activated={ALL_COUNTRIES}) == ()
    with pytest.raises(ValueError):
        activation_by_record(TREES, kind="agreement", recorded_parties={"KZ"}, activated=set())


@pytest.mark.parametrize(
    ("status", "role", "own", "allowed"),
    [
        ("submitted", "coordinator", False, ("under_review", "declined")),
        ("under_review", "coordinator", False, ("approved", "info_requested", "declined")),
        ("info_requested", "coordinator", False, ("under_review", "declined")),
        ("approved", "coordinator", False, ("in_progress",)),
        ("in_progress", "coordinator", False, ("fulfilled",)),
        ("fulfilled", "coordinator", False, ()),
        ("declined", "coordinator", False, ()),
        ("withdrawn", "coordinator", False, ()),
        ("submitted", "partner", True, ("withdrawn",)),
        ("under_review", "partner", True, ("withdrawn",)),
        ("info_requested", "partner", True, ("under_review", "withdrawn")),
        ("approved", "partner", True, ()),
        ("submitted", "partner", False, ()),
        ("submitted", "operator", False, ()),
    ],
)
def test_lifecycle_transitions(status, role, own, allowed):
    assert allowed_transitions(status, role=role, is_requesting_agency=own) == allowed


def test_only_a_decline_needs_a_note():
    assert transition_needs_note("declined")
    assert not any(transition_needs_note(s) for s in ("under_review", "approved", "withdrawn", "fulfilled"))
