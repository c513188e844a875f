"""Partner agencies request assistance; conditional offers activate."""

import asyncio
import time
import uuid
from datetime import datetime, timedelta

import httpx
import pytest

from caj.keys import revoke_key
from shared.contracts.registry import BY_TYPE
from shared.contracts.requests import (
    OFFER_ACTIVATED,
    OFFER_INTEREST_REGISTERED,
    REQUEST_STATUS_CHANGED,
    REQUEST_SUBMITTED,
)
from shared.events import from_kafka
from tests.kafka_helpers import read_topic
from tests.requests.conftest import auth

BORDER_TJ_AF = "caj-2006-2-1-04"  # on_request, TJ and AF only
BORDER_OTHERS = "caj-2006-2-1-05"  # on_request, KZ KG UZ
BUSINESS_SEMINAR = "caj-2006-3-0-09"  # joint_interest, all four
WATER_ENERGY = "caj-2006-2-7-03"  # regional_agreement
AFFORESTATION = "caj-2006-2-5-08"  # evidence
NUCLEAR_ZONE = "caj-2006-1-2-06"  # regional_agreement


def body(commitment_id: str, title: str = "Border posts on the Pyanj") -> dict:
    return {"commitment_id": commitment_id, "title": title, "description": "Equipment and training for 3 posts."}


@pytest.fixture(scope="module")
def api(stack):
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        yield client


def wait_until_accepted(api, key: str, timeout: float = 10) -> None:
    """A new key reaches the service through Kafka, a moment after it is made."""
    deadline = time.monotonic() + timeout
    while api.get("/v1/requests", headers=auth(key)).status_code != 200:
        assert time.monotonic() < deadline, "the new key never reached the service"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def people(keys, api):
    """Keys for the cast, one agency each, made once for the module."""
    cast = {
        "tj": keys.make("partner", country="TJ", agency="tj-border-service"),
        "tj_other_agency": keys.make("partner", country="TJ", agency="tj-mfa"),
        "af": keys.make("partner", country="AF", agency="af-mfa"),
        "kz": keys.make("partner", country="KZ", agency="kz-mfa"),
        "kg": keys.make("partner", country="KG", agency="kg-mfa"),
        "uz": keys.make("partner", country="UZ", agency="uz-mfa"),
        "jica": keys.make("partner", country="JP", agency="jica"),
        "jetro": keys.make("partner", country="JP", agency="jetro"),
        "coordinator": keys.make("coordinator"),
        "operator": keys.make("operator"),
    }
    for key in cast.values():
        wait_until_accepted(api, key)
    return cast


def submit(api, key: str, payload: dict, **headers) -> httpx.Response:
    return api.post("/v1/requests", json=payload, headers=auth(key) | headers)


def offer(api, people, commitment_id: str) -> dict:
    return api.get(f"/v1/offers/{commitment_id}", headers=auth(people["coordinator"])).json()


def total_requests(api, people) -> int:
    return api.get("/v1/requests", headers=auth(people["coordinator"])).json()["total"]


def events_about(bootstrap: str, subject: str, expected: int, timeout: float = 20, *, ours=None):
    """Events with this subject on requests.events, read until `expected` of
    them are there; with `ours` (request ids), only events of those requests,
    since every test of the session shares the topic."""

    def parse(records):
        events = [from_kafka(key=r.key, value=r.value, headers=r.headers) for r in records
                  if dict(r.headers).get("ce_subject") == subject.encode()]
        if ours is not None:
            events = [e for e in events if ours & {e.get_data().get("request_id"), e.get_data().get("trigger_id")}]
        return events

    records = asyncio.run(read_topic(bootstrap, "requests.events", until=lambda rs: len(parse(rs)) >= expected,
                                     timeout=timeout))
    events = parse(records)
    for event in events:  # every published event matches its documented model
        BY_TYPE[event.get_type()].model.model_validate(event.get_data())
    return events


# -- authentication and roles -------------------------------------------------------
def test_no_key_or_a_bad_key_is_401(api):
    for headers in ({}, {"Authorization": "Bearer caj_0000000000000000_nope"}, {"X-API-Key": "garbage"}):
        response = api.get("/v1/requests", headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["reason"] == "unauthenticated"
        assert "Bearer" in response.headers["www-authenticate"]


def test_only_partners_submit_and_only_coordinators_record(api, people):
    for role in ("coordinator", "operator"):
        response = submit(api, people[role], body(BORDER_TJ_AF))
        assert response.status_code == 403 and response.json()["reason"] == "forbidden"
    response = api.post(f"/v1/offers/{AFFORESTATION}/evidence", json={"reference": "Evaluation 2007"},
                        headers=auth(people["tj"]))
    assert response.status_code == 403


# -- eligibility --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("who", "commitment_id", "reason"),
    [
        ("kz", BORDER_TJ_AF, "country_not_eligible"),
        ("uz", BORDER_TJ_AF, "country_not_eligible"),
        ("tj", BORDER_OTHERS, "country_not_eligible"),
        ("af", BORDER_OTHERS, "country_not_eligible"),
        ("af", BUSINESS_SEMINAR, "country_not_eligible"),
        ("jica", BORDER_TJ_AF, "country_not_eligible"),
        ("tj", NUCLEAR_ZONE, "commitment_not_requestable"),
        ("kz", AFFORESTATION, "commitment_not_requestable"),
        ("kz", "caj-2006-1-1-02", "commitment_not_requestable"),
        ("tj", "caj-2006-9-9-99", "unknown_commitment"),
    ],
)
def test_refused_requests_say_why_and_store_nothing(api, people, stack, who, commitment_id, reason):
    before = total_requests(api, people)
    board_before = offer(api, people, commitment_id) if reason == "country_not_eligible" else None
    response = submit(api, people[who], body(commitment_id))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["reason"] == reason
    assert total_requests(api, people) == before
    if board_before is not None:
        assert offer(api, people, commitment_id) == board_before, "nothing activated"
    if commitment_id == BORDER_TJ_AF:
        assert response.json()["eligible_countries"] == ["TJ", "AF"]


# -- on_request ----------------------------------------------------------------------
def test_a_request_from_an_eligible_country_activates_the_offer_for_that_country_once(api, people, kafka_bootstrap):
    first = submit(api, people["tj"], body(BORDER_TJ_AF))
    assert first.status_code == 201, first.text
    created = first.json()
    assert created["status"] == "submitted" and created["country"] == "TJ"
    assert created["agency_id"] == "tj-border-service"
    assert first.headers["location"] == f"/v1/requests/{created['id']}"

    board = offer(api, people, BORDER_TJ_AF)
    assert board["activated"] is True
    assert board["countries"] == {"TJ": "activated", "AF": "dormant"}

    second = submit(api, people["tj"], body(BORDER_TJ_AF, title="A second, separate request"))
    assert second.status_code == 201 and second.json()["id"] != created["id"]

    af = submit(api, people["af"], body(BORDER_TJ_AF))
    assert af.status_code == 201
    assert offer(api, people, BORDER_TJ_AF)["countries"] == {"TJ": "activated", "AF": "activated"}

    # The topic is shared by every test of the session: look at this test's requests only.
    ours = {created["id"], second.json()["id"], af.json()["id"]}
    # Activations are keyed by the offer, so they share one partition, in the order they were staged: a wrong
    # activation by the second request would come between TJ's and AF's, and be one of the first two read.
    events = events_about(kafka_bootstrap, BORDER_TJ_AF, expected=2, ours=ours)
    activations = [e.get_data() for e in events if e.get_type() == OFFER_ACTIVATED]
    assert [a["trigger_id"] for a in activations] == [created["id"], af.json()["id"]], (
        "a second request is not a second activation")
    data = activations[0]
    assert data["countries"] == ["TJ"] and data["trigger"] == "request"
    assert data["requesting_agency_id"] == "tj-border-service" and "jica" in data["responsible_agencies"]
    assert activations[1]["countries"] == ["AF"]
    submitted = events_about(kafka_bootstrap, created["id"], expected=1)
    assert [e.get_type() for e in submitted] == [REQUEST_SUBMITTED]


# -- joint_interest -----------------------------------------------------------------------
def test_joint_interest_activates_once_when_every_required_country_has_asked(api, people, kafka_bootstrap):
    ours = set()

    def ask(who, title):
        response = submit(api, people[who], body(BUSINESS_SEMINAR, title=title))
        assert response.status_code == 201
        ours.add(response.json()["id"])

    for who in ("kz", "kg", "tj"):
        ask(who, "Business seminar in Tokyo")
    board = offer(api, people, BUSINESS_SEMINAR)
    assert board["activated"] is False
    assert board["countries"] == {"KZ": "requested", "KG": "requested", "TJ": "requested", "UZ": "dormant"}

    ask("kz", "Again from Kazakhstan")
    assert offer(api, people, BUSINESS_SEMINAR)["activated"] is False, "a repeated country does not complete it"

    ask("uz", "Uzbekistan joins")
    board = offer(api, people, BUSINESS_SEMINAR)
    assert board["activated"] is True
    assert set(board["countries"].values()) == {"activated"}

    events = events_about(kafka_bootstrap, BUSINESS_SEMINAR, expected=5, ours=ours)
    types = [e.get_type() for e in events]
    assert types.count(OFFER_INTEREST_REGISTERED) == 4
    assert types.count(OFFER_ACTIVATED) == 1
    activation = next(e for e in events if e.get_type() == OFFER_ACTIVATED).get_data()
    assert activation["countries"] == ["KZ", "KG", "TJ", "UZ"] and activation["trigger"] == "joint_interest"


# -- regional_agreement and evidence --------------------------------------------------------
def test_regional_agreement_activates_when_every_party_is_recorded(api, people):
    coordinator = auth(people["coordinator"])
    first = api.post(f"/v1/offers/{WATER_ENERGY}/agreements", headers=coordinator,
                     json={"reference": "Protocol of the water-energy meeting, Almaty", "parties": ["KZ", "KG"]})
    assert first.status_code == 201, first.text
    board = offer(api, people, WATER_ENERGY)
    assert board["activated"] is False
    assert board["countries"] == {"KZ": "requested", "KG": "requested", "TJ": "dormant", "UZ": "dormant"}
    second = api.post(f"/v1/offers/{WATER_ENERGY}/agreements", headers=coordinator,
                      json={"reference": "Addendum signed in Dushanbe", "parties": ["TJ", "UZ"]})
    assert second.status_code == 201
    board = offer(api, people, WATER_ENERGY)
    assert board["activated"] is True and set(board["countries"].values()) == {"activated"}
    assert [record["reference"] for record in board["records"]] == [
        "Protocol of the water-energy meeting, Almaty", "Addendum signed in Dushanbe",
    ]
    # RFC 3339 timestamps, with their zone, though SQLite keeps none.
    for moment in [board["activated_at"], *(record["recorded_at"] for record in board["records"])]:
        assert datetime.fromisoformat(moment).utcoffset() == timedelta(0), moment


def test_an_agreement_by_all_the_countries_concerned_takes_parties_outside_the_dialogue(api, people,
                                                                                       kafka_bootstrap):
    """The nuclear-weapon-free zone needs "an agreement by all the countries
    concerned": Turkmenistan and the nuclear states too, as the catalog has it."""
    coordinator = auth(people["coordinator"])
    parties = ["KZ", "KG", "TJ", "UZ", "TM", "CN", "FR", "RU", "GB", "US"]
    assert list(offer(api, people, NUCLEAR_ZONE)["countries"]) == parties

    def agree(*countries: str) -> httpx.Response:
        return api.post(f"/v1/offers/{NUCLEAR_ZONE}/agreements", headers=coordinator,
                        json={"reference": "Treaty on a Nuclear-Weapon-Free Zone in Central Asia, Semipalatinsk",
                              "parties": list(countries)})

    # The Central Asian countries alone do not complete it (they used to).
    assert agree("KZ", "KG", "TJ", "UZ").status_code == 201
    assert offer(api, people, NUCLEAR_ZONE)["activated"] is False
    outside = agree("TM", "CN", "FR", "RU", "GB")
    assert outside.status_code == 201, outside.text
    assert outside.json()["parties"] == ["CN", "FR", "GB", "RU", "TM"]
    board = offer(api, people, NUCLEAR_ZONE)
    assert board["activated"] is False and board["countries"]["US"] == "dormant"
    assert board["countries"]["TM"] == "requested"

    # Not a party the text concerns, or not an ISO alpha-2 code: refused, with why, and nothing recorded.
    not_concerned = agree("IR")
    assert not_concerned.status_code == 422
    assert not_concerned.headers["content-type"] == "application/problem+json"
    assert not_concerned.json()["reason"] == "not_a_party" and "IR is not among the countries concerned" in (
        not_concerned.json()["detail"])
    for malformed in ("us", "USA", "U1"):
        refused = agree(malformed)
        assert refused.status_code == 422 and refused.json()["reason"] == "validation_failed", malformed
    assert len(offer(api, people, NUCLEAR_ZONE)["records"]) == 2

    last = agree("US")
    assert last.status_code == 201
    board = offer(api, people, NUCLEAR_ZONE)
    assert board["activated"] is True and set(board["countries"].values()) == {"activated"}
    [activation] = [e for e in events_about(kafka_bootstrap, NUCLEAR_ZONE, expected=1, ours={last.json()["id"]})
                    if e.get_type() == OFFER_ACTIVATED]
    assert activation.get_data()["countries"] == parties
    assert activation.get_data()["trigger"] == "regional_agreement"


def test_evidence_activates_an_evidence_offer_and_conditions_are_not_mixed_up(api, people):
    coordinator = auth(people["coordinator"])
    wrong = api.post(f"/v1/offers/{AFFORESTATION}/agreements", headers=coordinator,
                     json={"reference": "Some agreement", "parties": ["KZ"]})
    assert wrong.status_code == 409 and wrong.json()["reason"] == "condition_mismatch"
    not_party = api.post(f"/v1/offers/{NUCLEAR_ZONE}/agreements", headers=coordinator,
                         json={"reference": "Treaty text", "parties": ["AF"]})
    assert not_party.status_code == 422 and not_party.json()["reason"] == "not_a_party"
    assert offer(api, people, AFFORESTATION)["activated"] is False
    recorded = api.post(f"/v1/offers/{AFFORESTATION}/evidence", headers=coordinator,
                        json={"reference": "Evaluation of the NPO afforestation project, 2007"})
    assert recorded.status_code == 201
    assert offer(api, people, AFFORESTATION)["activated"] is True


# -- idempotency ------------------------------------------------------------------------
def test_idempotency_key_replays_the_original_response_and_refuses_another_body(api, people):
    key = str(uuid.uuid4())
    before = total_requests(api, people)
    first = submit(api, people["kg"], body(BORDER_OTHERS), **{"Idempotency-Key": key})
    again = submit(api, people["kg"], body(BORDER_OTHERS), **{"Idempotency-Key": key})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert total_requests(api, people) == before + 1
    other = submit(api, people["kg"], body(BORDER_OTHERS, title="Different title"), **{"Idempotency-Key": key})
    assert other.status_code == 422 and other.json()["reason"] == "idempotency_key_reused"
    assert total_requests(api, people) == before + 1


# -- who sees what --------------------------------------------------------------------------
def test_partners_see_their_countrys_requests_and_responsible_agencies_theirs(api, people):
    created = submit(api, people["tj"], body(BORDER_TJ_AF, title="Visibility check")).json()
    path = f"/v1/requests/{created['id']}"
    for who in ("tj", "tj_other_agency", "jica", "coordinator", "operator"):
        assert api.get(path, headers=auth(people[who])).status_code == 200, who
        assert api.get(path + "/history", headers=auth(people[who])).status_code == 200, who
    for who in ("kz", "af", "jetro"):
        for suffix in ("", "/history"):
            response = api.get(path + suffix, headers=auth(people[who]))
            assert response.status_code == 404 and response.json()["reason"] == "request_not_found", who
        response = api.post(path + "/transitions", json={"to": "withdrawn"}, headers=auth(people[who]))
        assert response.status_code == 404, who
    kz_list = api.get("/v1/requests", headers=auth(people["kz"])).json()["items"]
    assert all(item["country"] == "KZ" for item in kz_list)
    jica_list = api.get("/v1/requests", params={"limit": 100}, headers=auth(people["jica"])).json()["items"]
    assert created["id"] in [item["id"] for item in jica_list]
    # The summary counts what the list shows, in each caller's scope.
    for who in ("tj", "kz", "jica", "coordinator"):
        summary = api.get("/v1/requests/summary", headers=auth(people[who])).json()
        assert summary["total"] == api.get("/v1/requests", headers=auth(people[who])).json()["total"], who
        for country, count in summary["by_country"].items():
            assert api.get("/v1/requests", params={"country": country},
                           headers=auth(people[who])).json()["total"] == count, (who, country)
        assert sum(summary["by_status"].values()) == summary["total"], who
    assert set(api.get("/v1/requests/summary", headers=auth(people["kz"])).json()["by_country"]) <= {"KZ"}


# -- lifecycle -------------------------------------------------------------------------------
def test_lifecycle_with_history_and_refused_transitions(api, people):
    created = submit(api, people["tj"], body(BORDER_TJ_AF, title="Lifecycle")).json()
    path = f"/v1/requests/{created['id']}/transitions"
    coordinator, agency = auth(people["coordinator"]), auth(people["tj"])

    def move(headers, to, note=None):
        return api.post(path, json={"to": to, "note": note}, headers=headers)

    def allowed_for(headers):
        return api.get(f"/v1/requests/{created['id']}", headers=headers).json()["allowed_transitions"]

    assert allowed_for(coordinator) == ["under_review", "declined"]
    assert allowed_for(agency) == ["withdrawn"]
    assert allowed_for(auth(people["tj_other_agency"])) == [], "the same country, not the requesting agency"
    assert move(coordinator, "under_review").json()["status"] == "under_review"
    assert move(coordinator, "info_requested", "Which posts exactly?").status_code == 200
    assert allowed_for(coordinator) == ["under_review", "declined"]
    assert allowed_for(agency) == ["under_review", "withdrawn"], "answering is the agency's to do now"
    assert move(auth(people["tj_other_agency"]), "under_review").status_code == 403
    assert move(agency, "under_review", "Posts 4, 7 and 9").json()["status"] == "under_review"
    refused = move(coordinator, "fulfilled")
    assert refused.status_code == 409
    assert refused.json()["reason"] == "transition_not_allowed"
    assert refused.json()["allowed"] == ["approved", "info_requested", "declined"]
    no_reason = move(coordinator, "declined")
    assert no_reason.status_code == 422 and no_reason.json()["reason"] == "note_required"
    assert move(coordinator, "approved").status_code == 200
    too_late = move(agency, "withdrawn")
    assert too_late.status_code == 409 and too_late.json()["allowed"] == []
    assert move(coordinator, "in_progress").status_code == 200
    assert move(coordinator, "fulfilled").json()["status"] == "fulfilled"

    history = api.get(f"/v1/requests/{created['id']}/history", headers=agency).json()["items"]
    assert [(h["from_status"], h["to_status"]) for h in history] == [
        (None, "submitted"), ("submitted", "under_review"), ("under_review", "info_requested"),
        ("info_requested", "under_review"), ("under_review", "approved"), ("approved", "in_progress"),
        ("in_progress", "fulfilled"),
    ]
    assert history[2]["note"] == "Which posts exactly?" and history[2]["actor_role"] == "coordinator"
    assert history[3]["actor_role"] == "partner" and history[3]["actor_agency_id"] == "tj-border-service"


def test_a_transition_never_the_callers_to_make_is_403_and_one_wrong_for_the_state_is_409(api, people):
    created = submit(api, people["tj"], body(BORDER_TJ_AF, title="Approve my own")).json()
    path = f"/v1/requests/{created['id']}/transitions"
    agency, coordinator = auth(people["tj"]), auth(people["coordinator"])

    for headers, to in ((agency, "approved"), (agency, "fulfilled"), (coordinator, "withdrawn")):
        refused = api.post(path, json={"to": to}, headers=headers)
        assert refused.status_code == 403, (to, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["reason"] == "forbidden" and "allowed" not in problem
        assert problem["detail"].endswith("never does, whatever the request's status."), problem
    assert "Coordinators may move a request to approved" in api.post(
        path, json={"to": "approved"}, headers=agency).json()["detail"]

    # Answering a question is the agency's to do, but only once one is asked.
    wrong_state = api.post(path, json={"to": "under_review"}, headers=agency)
    assert wrong_state.status_code == 409 and wrong_state.json()["reason"] == "transition_not_allowed"
    assert wrong_state.json()["allowed"] == ["withdrawn"]
    assert api.get(f"/v1/requests/{created['id']}", headers=agency).json()["status"] == "submitted"


def test_withdraw_and_decline(api, people, kafka_bootstrap):
    withdrawn = submit(api, people["tj"], body(BORDER_TJ_AF, title="To withdraw")).json()
    response = api.post(f"/v1/requests/{withdrawn['id']}/transitions", json={"to": "withdrawn"},
                        headers=auth(people["tj"]))
    assert response.json()["status"] == "withdrawn"
    declined = submit(api, people["tj"], body(BORDER_TJ_AF, title="To decline")).json()
    response = api.post(f"/v1/requests/{declined['id']}/transitions",
                        json={"to": "declined", "note": "Covered by the earlier request"},
                        headers=auth(people["coordinator"]))
    assert response.json()["status"] == "declined"
    events = events_about(kafka_bootstrap, declined["id"], expected=2)
    changed = [e for e in events if e.get_type() == REQUEST_STATUS_CHANGED]
    assert changed[0].get_data()["to_status"] == "declined"
    assert changed[0].get_data()["note"] == "Covered by the earlier request"


# -- limits ---------------------------------------------------------------------------------
def test_limits(api, people):
    huge = body(BORDER_TJ_AF) | {"description": "x" * (70 * 1024)}
    response = submit(api, people["tj"], huge)
    assert response.status_code == 413 and response.json()["reason"] == "payload_too_large"
    long_title = submit(api, people["tj"], body(BORDER_TJ_AF, title="t" * 201))
    assert long_title.status_code == 422 and long_title.json()["reason"] == "validation_failed"
    extra = submit(api, people["tj"], body(BORDER_TJ_AF) | {"priority": "urgent"})
    assert extra.status_code == 422
    too_many = api.get("/v1/requests", params={"limit": 101}, headers=auth(people["coordinator"]))
    assert too_many.status_code == 422


# -- revocation -------------------------------------------------------------------------------
def test_revoked_key_is_refused_within_seconds(api, keys, kafka_bootstrap):
    key = keys.make("partner", country="UZ", agency="uz-water")
    wait_until_accepted(api, key)
    key_id = key.split("_")[1]
    asyncio.run(revoke_key(kafka_bootstrap, key_id))
    deadline = time.monotonic() + 10
    while api.get("/v1/requests", headers=auth(key)).status_code != 401:
        assert time.monotonic() < deadline, "revocation did not take effect within 10 s"
        time.sleep(0.1)


def test_metrics(api, people):
    submit(api, people["kz"], body(BORDER_TJ_AF))
    metrics = api.get("/metrics").text
    assert 'caj_requests_refused_total{reason="country_not_eligible"}' in metrics
    assert 'caj_requests_by_status{status="submitted"}' in metrics
    assert 'caj_offers_activated{condition_type="on_request"}' in metrics
    assert 'caj_requests_submitted_total{country="TJ"}' in metrics


def test_a_chunked_body_over_the_limit_is_refused_too(api, people):
    def chunks():
        for _ in range(80):
            yield b"x" * 1024

    response = api.post("/v1/requests", content=chunks(),
                        headers=auth(people["tj"]) | {"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["reason"] == "payload_too_large"


def test_the_list_sorts_by_the_column_asked_and_refuses_other_orders(api, people):
    created = []
    for country, key in (("TJ", people["tj"]), ("KZ", people["kz"])):
        commitment = BORDER_TJ_AF if country == "TJ" else BORDER_OTHERS
        response = submit(api, key, body(commitment, title=f"Sorted {country}"))
        assert response.status_code == 201, response.text
        created.append(response.json()["id"])
    moved = api.post(f"/v1/requests/{created[0]}/transitions", headers=auth(people["coordinator"]),
                     json={"to": "under_review"})
    assert moved.status_code == 200, moved.text
    for sort in ("created_at", "-created_at", "updated_at", "-updated_at", "status", "-status", "country",
                 "-country"):
        response = api.get("/v1/requests", headers=auth(people["coordinator"]), params={"sort": sort, "limit": 100})
        assert response.status_code == 200, response.text
        values = [item[sort.lstrip("-")] for item in response.json()["items"]]
        assert len(set(values)) > 1, f"the sort by {sort} is shown on distinct values"
        assert values == sorted(values, reverse=sort.startswith("-")), sort
    refused = api.get("/v1/requests", headers=auth(people["coordinator"]), params={"sort": "title"})
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
