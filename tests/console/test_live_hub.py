"""The live hub: each event reaches every stream whose user may see it, by
the requests API's rule, and no other; a stream that falls behind is ended."""

import json
from datetime import UTC, datetime

from console_service.live import STREAM_QUEUE_SIZE, LiveEvent, LiveHub, may_see
from shared.contracts.notifications import DELIVERY_ATTEMPTED, DeliveryAttempted
from shared.contracts.requests import OFFER_ACTIVATED, REQUEST_STATUS_CHANGED, REQUEST_SUBMITTED
from shared.identity import Principal
from tests.console.conftest import run_async

COORDINATOR = Principal(key_id="c", role="coordinator", agency_id=None, country=None)
OPERATOR = Principal(key_id="o", role="operator", agency_id=None, country=None)
TJ_BORDER = Principal(key_id="t", role="partner", agency_id="tj-border-service", country="TJ")
KZ_MFA = Principal(key_id="k", role="partner", agency_id="kz-mfa", country="KZ")
JICA = Principal(key_id="j", role="partner", agency_id="jica", country="JP")


def submitted(country: str, agency: str, responsible: list[str]) -> LiveEvent:
    event = LiveEvent.from_cloudevent(REQUEST_SUBMITTED, {
        "request_id": "r-1", "commitment_id": "caj-2006-2-1-04", "country": country, "agency_id": agency,
        "responsible_agencies": responsible, "title": "t"})
    assert event is not None
    return event


def test_who_may_see_a_request_event():
    event = submitted("TJ", "tj-border-service", ["jica"])
    assert event.name == "request-submitted" and event.status == "submitted"
    assert may_see(COORDINATOR, event) and may_see(OPERATOR, event)
    assert may_see(TJ_BORDER, event), "its own country's"
    assert may_see(JICA, event), "an agency responsible for the commitment"
    assert not may_see(KZ_MFA, event), "another country's"
    name_line, data_line, *_ = event.server_sent_event.split("\n")
    assert name_line == "event: request-submitted" and event.server_sent_event.endswith("\n\n")
    # Which request changed, not its content: the page reads that from the API with its user's key.
    assert json.loads(data_line.removeprefix("data: ")) == {
        "request_id": "r-1", "commitment_id": "caj-2006-2-1-04", "delivery_id": None, "status": "submitted"}


def test_a_status_change_and_an_offer_activation_are_scoped_the_same_way():
    changed = LiveEvent.from_cloudevent(REQUEST_STATUS_CHANGED, {
        "request_id": "r-2", "commitment_id": "c", "country": "KZ", "agency_id": "kz-mfa", "from_status": "submitted",
        "to_status": "under_review", "responsible_agencies": []})
    assert changed is not None and changed.status == "under_review"
    assert may_see(KZ_MFA, changed) and not may_see(TJ_BORDER, changed) and not may_see(JICA, changed)
    activated = LiveEvent.from_cloudevent(OFFER_ACTIVATED, {
        "commitment_id": "c", "countries": ["TJ", "AF"], "requesting_agency_id": None,
        "responsible_agencies": ["jica"]})
    assert activated is not None
    assert may_see(TJ_BORDER, activated) and may_see(JICA, activated) and not may_see(KZ_MFA, activated)
    assert LiveEvent.from_cloudevent("org.example.unrelated.v1", {}) is None


def test_a_delivery_attempt_is_seen_by_its_agency_and_coordinators_only():
    attempted = DeliveryAttempted(
        delivery_id="msg_1", notification_id="n-1", agency_id="tj-border-service", event_type=REQUEST_SUBMITTED,
        attempt=1, outcome="failed", status_code=503, error="HTTP 503", duration_ms=12.0,
        attempted_at=datetime.now(UTC), next_attempt_at=None)
    event = LiveEvent.from_cloudevent(DELIVERY_ATTEMPTED, attempted.model_dump(mode="json"))
    assert event is not None and event.name == "delivery-attempted" and event.status == "failed"
    assert may_see(TJ_BORDER, event) and may_see(COORDINATOR, event) and may_see(OPERATOR, event)
    tj_customs = Principal(key_id="t2", role="partner", agency_id="tj-customs", country="TJ")
    assert not may_see(tj_customs, event), "another agency of the same country"
    assert not may_see(KZ_MFA, event) and not may_see(JICA, event)
    data = json.loads(event.server_sent_event.split("\n")[1].removeprefix("data: "))
    assert data["delivery_id"] == "msg_1" and data["request_id"] is None


def test_the_hub_fans_out_only_to_streams_that_may_see():
    async def scenario() -> None:
        hub = LiveHub()
        streams = {name: hub.open(principal) for name, principal in
                   (("coordinator", COORDINATOR), ("tj", TJ_BORDER), ("kz", KZ_MFA), ("jica", JICA))}
        assert hub.publish(submitted("TJ", "tj-border-service", ["jica"])) == 3
        assert {name for name, stream in streams.items() if not stream.queue.empty()} == {"coordinator", "tj", "jica"}
        hub.close(streams["tj"])
        assert hub.publish(submitted("TJ", "tj-border-service", [])) == 1, "only the coordinator is left to see it"
        assert streams["tj"].queue.qsize() == 1

    run_async(scenario)  # in a thread: the browser tests keep a loop running in this one


def test_a_stream_that_falls_behind_is_ended_not_left_to_grow():
    async def scenario() -> None:
        hub = LiveHub()
        slow = hub.open(COORDINATOR)
        for _ in range(STREAM_QUEUE_SIZE):
            hub.publish(submitted("TJ", "tj-border-service", []))
        assert not slow.overflowed and hub.stream_count == 1
        assert hub.publish(submitted("TJ", "tj-border-service", [])) == 0
        assert slow.overflowed and hub.stream_count == 0

    run_async(scenario)  # in a thread: the browser tests keep a loop running in this one
