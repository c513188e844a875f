"""Webhook delivery on the real notifications service, a real broker and a
real HTTP receiver on 127.0.0.1: signatures checked with the standardwebhooks
package as a receiver would, retries, Retry-After, 410, dead deliveries
retried by hand, a restart in the middle of a schedule, a kill mid-attempt.
The schedule's every case is a unit test (test_schedule.py); timeouts are
tested on a single attempt (test_delivery_rules.py)."""

import asyncio
import itertools
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from notifications_service.webhooks import WEBHOOK_TEST
from shared.contracts.notifications import DELIVERY_ATTEMPTED, DELIVERY_DEAD
from shared.contracts.requests import REQUEST_STATUS_CHANGED, REQUESTS_SOURCE, RequestStatusChanged
from shared.events import from_kafka, new_event, to_kafka
from shared.topics import NOTIFICATIONS_DEAD_LETTER, NOTIFICATIONS_DELIVERIES, REQUESTS_EVENTS
from tests.databases import database_backends, empty_database
from tests.kafka_helpers import read_topic
from tests.notifications.receiver import Receiver, Reply
from tests.requests.conftest import auth
from tests.service_process import ServiceProcess

SCHEDULE = [0.4, 0.8, 1.2]  # seconds after the 1st, 2nd, 3rd failure; then dead
JITTER = 0.1
TIMEOUT = 1.0
LEASE = 2 * TIMEOUT + 12.0  # longer than a restart, so a test can see it hold
GRACE = 4.0
FAST_DELIVERY = {
    "webhook_allow_private_addresses": "true",
    "webhook_retry_schedule_seconds": json.dumps(SCHEDULE),
    "webhook_retry_jitter": str(JITTER),
    "webhook_timeout_seconds": str(TIMEOUT),
    "webhook_lease_margin_seconds": str(LEASE - 2 * TIMEOUT),
    "webhook_secret_grace_seconds": str(GRACE),
    "delivery_poll_interval_seconds": "0.2",
}
_agency_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def receiver():
    with Receiver() as running:
        yield running


def start_notifications(kafka_bootstrap, database_url, log_path, **settings) -> ServiceProcess:
    service = ServiceProcess("notifications_service", database_url=database_url, kafka_bootstrap=kafka_bootstrap,
                             log_path=log_path, **(FAST_DELIVERY | settings)).start()
    service.wait_status("/readyz", 200, timeout=120)
    return service


@pytest.fixture(scope="module", params=database_backends())
def hooks(request, kafka_bootstrap, tmp_path_factory):
    """The service on each database: claiming (UPDATE ... RETURNING, and on
    PostgreSQL FOR UPDATE SKIP LOCKED) and recording differ between them."""
    directory = tmp_path_factory.mktemp("webhooks")
    with empty_database(request.param, directory) as database_url:
        service = start_notifications(kafka_bootstrap, database_url, directory / "n.log")
        try:
            yield service
        finally:
            service.stop()


class Agency:
    """A partner agency of its own for each test, with a key and a webhook path."""

    def __init__(self, keys, country: str = "TJ") -> None:
        self.id = f"tj-hook-{next(_agency_numbers)}-{uuid.uuid4().hex[:6]}"
        self.country = country
        self.key = keys.make("partner", country=country, agency=self.id)
        self.path = f"/{self.id}"


def register(api: httpx.Client, agency: Agency, url: str, **extra) -> httpx.Response:
    """A webhook for the events these tests send (unless told otherwise): the
    session's broker also carries other tests' events, and some are routed to
    every agency of a country (progress reports, to the agencies of the
    countries a commitment benefits)."""
    body = {"url": url, "event_types": [REQUEST_STATUS_CHANGED]} | extra
    # A new key reaches the service through identity.keys: until then it is unknown (401).
    deadline = time.monotonic() + 30
    while (response := api.put(f"/v1/agencies/{agency.id}/webhook", headers=auth(agency.key),
                               json=body)).status_code == 401 and time.monotonic() < deadline:
        time.sleep(0.2)
    return response


def status_changed(bootstrap: str, agency: Agency, *, to_status: str = "under_review") -> str:
    """Publish, as the requests service does, that one of the agency's requests
    changed status; returns the event id."""
    data = RequestStatusChanged(
        request_id=str(uuid.uuid4()), commitment_id="caj-2006-2-1-04", country=agency.country, agency_id=agency.id,
        from_status="submitted", to_status=to_status, note=None, changed_by_role="coordinator",
        changed_at=datetime.now(UTC), responsible_agencies=["jica"],
    )
    event = new_event(type=REQUEST_STATUS_CHANGED, source=REQUESTS_SOURCE, subject=data.request_id,
                      data=data.model_dump(mode="json"))

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            record = to_kafka(event, key=data.request_id)
            await producer.send_and_wait(REQUESTS_EVENTS.name, value=record.value, key=record.key,
                                         headers=record.headers)
        finally:
            await producer.stop()

    asyncio.run(send())
    return event.get_id()


def wait_delivery(api: httpx.Client, key: str, agency: Agency, predicate, timeout: float = 30.0) -> dict:
    """The agency's single delivery once `predicate(delivery)` holds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        page = api.get("/v1/deliveries", headers=auth(key), params={"agency_id": agency.id}).json()
        items = page.get("items", [])
        if items:
            last = api.get(f"/v1/deliveries/{items[-1]['id']}", headers=auth(key)).json()
            if predicate(last):
                return last
        time.sleep(0.1)
    raise AssertionError(f"delivery condition never met; last: {last}")


def metric(service: ServiceProcess, name: str, **labels: str) -> float:
    """A sample's value on the service's /metrics (0 when it is not there yet)."""
    for family in text_string_to_metric_families(httpx.get(service.base_url + "/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def events_about(bootstrap: str, topic: str, delivery_id: str, count: int) -> list:
    records = asyncio.run(read_topic(
        bootstrap, topic, timeout=30,
        until=lambda records: sum(r.key == delivery_id.encode() for r in records) >= count))
    return [from_kafka(key=r.key, value=r.value, headers=r.headers) for r in records if r.key == delivery_id.encode()]


# -- signatures ---------------------------------------------------------------------------
def test_a_delivery_is_signed_per_standard_webhooks_and_recorded(hooks, receiver, keys, kafka_bootstrap):
    agency = Agency(keys)
    coordinator = keys.make("coordinator")
    with httpx.Client(base_url=hooks.base_url, timeout=30) as api:
        created = register(api, agency, receiver.script(agency.path))
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        assert secret.startswith("whsec_")
        again = register(api, agency, receiver.script(agency.path))
        assert again.status_code == 200 and again.json()["secret"] is None, "the secret is shown once"
        assert api.get(f"/v1/agencies/{agency.id}/webhook", headers=auth(coordinator)).json()["secret"] is None

        delivered_before = metric(hooks, "caj_notifications_deliveries_total", outcome="delivered")
        latencies_before = metric(hooks, "caj_notifications_delivery_latency_seconds_count")
        event_id = status_changed(kafka_bootstrap, agency)
        [request] = receiver.wait_for(agency.path, 1)
        payload = Webhook(secret).verify(request.body, request.headers)
        assert payload["type"] == REQUEST_STATUS_CHANGED
        assert payload["data"]["event_id"] == event_id
        assert payload["data"]["payload"]["agency_id"] == agency.id
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "A" * 43 + "=").verify(request.body, request.headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(request.body.replace(b"under_review", b"approved"), request.headers)

        delivery = wait_delivery(api, coordinator, agency, lambda d: d["state"] == "delivered")
        assert delivery["id"] == request.headers["webhook-id"]
        assert delivery["attempts"] == 1 and delivery["history"][0]["status_code"] == 200
        mine = api.get("/v1/notifications", headers=auth(agency.key)).json()["items"]
        assert mine[0]["delivery"]["id"] == delivery["id"] and mine[0]["delivery"]["state"] == "delivered"
        # RFC 3339 timestamps, with their zone, on every database.
        for moment in (delivery["created_at"], delivery["delivered_at"], delivery["history"][0]["attempted_at"],
                       mine[0]["event_time"], mine[0]["created_at"]):
            assert datetime.fromisoformat(moment).utcoffset() == timedelta(0), moment

    [outcome] = events_about(kafka_bootstrap, NOTIFICATIONS_DELIVERIES.name, delivery["id"], 1)
    assert outcome.get_type() == DELIVERY_ATTEMPTED
    assert outcome.get_data()["outcome"] == "delivered" and outcome.get_data()["status_code"] == 200
    # Other tests' deliveries may land meanwhile: at least this one is counted.
    assert metric(hooks, "caj_notifications_deliveries_total", outcome="delivered") >= delivered_before + 1
    assert metric(hooks, "caj_notifications_delivery_latency_seconds_count") >= latencies_before + 1


def test_rotation_signs_with_both_secrets_until_the_grace_period_ends(hooks, receiver, keys, kafka_bootstrap):
    agency = Agency(keys)
    with httpx.Client(base_url=hooks.base_url, timeout=30) as api:
        old = register(api, agency, receiver.script(agency.path)).json()["secret"]
        rotated = api.post(f"/v1/agencies/{agency.id}/webhook/rotate-secret", headers=auth(agency.key))
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        assert new.startswith("whsec_") and new != old
        assert len(rotated.json()["previous_secrets_expire_at"]) == 1

        status_changed(kafka_bootstrap, agency)
        [during] = receiver.wait_for(agency.path, 1)
        assert len(during.headers["webhook-signature"].split(" ")) == 2
        Webhook(new).verify(during.body, during.headers)
        Webhook(old).verify(during.body, during.headers)

        time.sleep(GRACE + 0.5)
        status_changed(kafka_bootstrap, agency)
        after = receiver.wait_for(agency.path, 2)[1]
        Webhook(new).verify(after.body, after.headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(old).verify(after.body, after.headers)


def test_only_the_agency_itself_manages_its_webhook(hooks, receiver, keys):
    agency, other = Agency(keys), Agency(keys)
    coordinator = keys.make("coordinator")
    with httpx.Client(base_url=hooks.base_url, timeout=30) as api:
        assert register(api, agency, receiver.script(agency.path)).status_code == 201
        url = receiver.script(other.path)
        hijack = api.put(f"/v1/agencies/{agency.id}/webhook", headers=auth(other.key), json={"url": url})
        assert hijack.status_code == 403
        assert api.put(f"/v1/agencies/{agency.id}/webhook", headers=auth(coordinator),
                       json={"url": url}).status_code == 403
        assert api.get(f"/v1/agencies/{agency.id}/webhook", headers=auth(other.key)).status_code == 403
        assert api.put(f"/v1/agencies/{agency.id}/webhook", json={"url": url}).status_code == 401
        bad_type = register(api, agency, url, event_types=["org.example.nothing.v1"])
        assert bad_type.status_code == 422
        assert api.get(f"/v1/agencies/{agency.id}/webhook", headers=auth(agency.key)).json()["url"].endswith(
            agency.path), "a refused change changes nothing"
        assert api.delete(f"/v1/agencies/{agency.id}/webhook", headers=auth(agency.key)).status_code == 204
        assert api.get(f"/v1/agencies/{agency.id}/webhook", headers=auth(agency.key)).status_code == 404


def test_a_test_event_is_a_signed_delivery_in_the_log_and_not_in_the_inbox(hooks, receiver, keys):
    agency, other = Agency(keys), Agency(keys)
    coordinator = keys.make("coordinator")
    with httpx.Client(base_url=hooks.base_url, timeout=30) as api:
        test_path = f"/v1/agencies/{agency.id}/webhook/test"
        assert api.post(test_path, headers=auth(agency.key)).status_code in (401, 404), "no webhook yet"
        secret = register(api, agency, receiver.script(agency.path)).json()["secret"]
        assert api.post(test_path, headers=auth(other.key)).status_code == 403
        assert api.post(test_path, headers=auth(coordinator)).status_code == 403
        assert not receiver.received(agency.path), "a refused test sends nothing"

        sent = api.post(test_path, headers=auth(agency.key))
        assert sent.status_code == 202, sent.text
        assert sent.json()["event_type"] == WEBHOOK_TEST and sent.json()["state"] == "pending"
        [request] = receiver.wait_for(agency.path, 1)
        payload = Webhook(secret).verify(request.body, request.headers)
        assert payload["type"] == WEBHOOK_TEST and payload["data"]["payload"]["agency_id"] == agency.id
        assert request.headers["webhook-id"] == sent.json()["id"]
        delivery = wait_delivery(api, agency.key, agency, lambda d: d["state"] == "delivered")
        assert delivery["history"][0]["status_code"] == 200
        assert api.get("/v1/inbox", headers=auth(agency.key)).json()["total"] == 0, "a test is not inbox work"


def test_an_agency_narrows_what_it_receives_by_event_type(hooks, receiver, keys, kafka_bootstrap):
    agency = Agency(keys)
    coordinator = keys.make("coordinator")
    with httpx.Client(base_url=hooks.base_url, timeout=30) as api:
        assert register(api, agency, receiver.script(agency.path),
                        event_types=["org.caj-tracker.requests.offer.activated.v1"]).status_code == 201
        event_id = status_changed(kafka_bootstrap, agency)
        # The coordinators hear of the same event: once they have, the agency's turn has passed.
        deadline = time.monotonic() + 30
        while not [n for n in api.get("/v1/notifications", headers=auth(coordinator),
                                      params={"event_type": REQUEST_STATUS_CHANGED, "limit": 100}).json()["items"]
                   if n["event_id"] == event_id]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # An event's notifications and deliveries commit in one transaction: the agency's would be here by now.
        assert api.get("/v1/notifications", headers=auth(agency.key)).json()["items"] == []
        assert receiver.received(agency.path) == []


# -- retries ---------------------------------------------------------------------------------
def test_a_receiver_failing_twice_then_succeeding_gets_three_attempts_on_schedule(hooks, receiver, keys,
                                                                                   kafka_bootstrap):
    agency = Agency(keys)
    coordinator = keys.make("coordinator")
    url = receiver.script(agency.path, Reply(500), Reply(502))
    with httpx.Client(base_url=hooks.base_url, timeout=30) as api:
        secret = register(api, agency, url).json()["secret"]
        status_changed(kafka_bootstrap, agency)
        attempts = receiver.wait_for(agency.path, 3)
        delivery = wait_delivery(api, coordinator, agency, lambda d: d["state"] == "delivered")
    assert len({request.headers["webhook-id"] for request in attempts}) == 1, "webhook-id is stable across retries"
    assert len({request.body for request in attempts}) == 1
    for request in attempts:
        Webhook(secret).verify(request.body, request.headers)
    gaps = [later.at - earlier.at for earlier, later in zip(attempts, attempts[1:], strict=False)]
    assert gaps[0] >= SCHEDULE[0] * (1 - JITTER) - 0.05 and gaps[1] >= SCHEDULE[1] * (1 - JITTER) - 0.05, gaps
    assert delivery["attempts"] == 3
    assert [(a["outcome"], a["status_code"]) for a in delivery["history"]] == [
        ("failed", 500), ("failed", 502), ("delivered", 200)]
    outcomes = events_about(kafka_bootstrap, NOTIFICATIONS_DELIVERIES.name, delivery["id"], 3)
    assert [e.get_data()["outcome"] for e in outcomes] == ["failed", "failed", "delivered"]
    assert outcomes[0].get_data()["next_attempt_at"] is not None


def test_retry_after_on_429_and_503_is_honoured(hooks, receiver, keys, kafka_bootstrap):
    agency = Agency(keys)
    url = receiver.script(agency.path, Reply(429, {"Retry-After": "2"}), Reply(503, {"Retry-After": "1"}))
    with httpx.Client(base_url=hooks.base_url, timeout=30) as api:
        register(api, agency, url)
        status_changed(kafka_bootstrap, agency)
        attempts = receiver.wait_for(agency.path, 3, timeout=30)
    gaps = [later.at - earlier.at for earlier, later in zip(attempts, attempts[1:], strict=False)]
    assert gaps[0] >= 2.0 - 0.05, f"Retry-After: 2 was not honoured ({gaps})"
    assert gaps[1] >= 1.0 - 0.05, f"Retry-After: 1 was not honoured ({gaps})"


def test_410_disables_the_endpoint_and_kills_the_delivery(hooks, receiver, keys, kafka_bootstrap):
    agency = Agency(keys)
    coordinator = keys.make("coordinator")
    url = receiver.script(agency.path, Reply(410))
    with httpx.Client(base_url=hooks.base_url, timeout=30) as api:
        register(api, agency, url)
        status_changed(kafka_bootstrap, agency)
        delivery = wait_delivery(api, coordinator, agency, lambda d: d["state"] == "dead")
        assert delivery["attempts"] == 1 and delivery["history"][0]["outcome"] == "endpoint_gone"
        endpoint = api.get(f"/v1/agencies/{agency.id}/webhook", headers=auth(agency.key)).json()
        assert endpoint["enabled"] is False and "410" in endpoint["disabled_reason"]

        retry = api.post(f"/v1/deliveries/{delivery['id']}/retry", headers=auth(coordinator))
        assert retry.status_code == 409 and retry.json()["reason"] == "webhook_disabled"

        # While disabled, notifications wait in the inbox and nothing is sent.
        event_id = status_changed(kafka_bootstrap, agency)
        deadline = time.monotonic() + 30
        while not (items := [n for n in api.get("/v1/inbox", headers=auth(agency.key)).json()["items"]
                             if n["event_id"] == event_id]):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # A delivery is only ever made in the transaction of its notification: none now, so none to send.
        assert items[0]["delivery"] is None
        assert len(receiver.received(agency.path)) == 1

        # Registering again re-enables it, and the dead delivery can be retried.
        assert register(api, agency, url).status_code == 200
        assert api.post(f"/v1/deliveries/{delivery['id']}/retry", headers=auth(coordinator)).status_code == 200
        receiver.wait_for(agency.path, 2)
    [dead] = events_about(kafka_bootstrap, NOTIFICATIONS_DEAD_LETTER.name, delivery["id"], 1)
    assert dead.get_type() == DELIVERY_DEAD and dead.get_data()["last_status_code"] == 410


def test_an_exhausted_schedule_kills_the_delivery_and_a_coordinator_can_retry_it(hooks, receiver, keys,
                                                                                  kafka_bootstrap):
    agency = Agency(keys)
    coordinator, operator = keys.make("coordinator"), keys.make("operator")
    url = receiver.script(agency.path, *[Reply(500)] * (len(SCHEDULE) + 1))
    dead_before = metric(hooks, "caj_notifications_dead_total")
    with httpx.Client(base_url=hooks.base_url, timeout=30) as api:
        register(api, agency, url)
        status_changed(kafka_bootstrap, agency)
        wait_delivery(api, coordinator, agency, lambda d: d["attempts"] >= 1 and d["state"] == "pending")
        assert metric(hooks, "caj_notifications_retry_queue_depth") >= 1, "a failed delivery waits in the queue"
        dead = wait_delivery(api, coordinator, agency, lambda d: d["state"] == "dead", timeout=30)
        assert dead["attempts"] == len(SCHEDULE) + 1 and dead["next_attempt_at"] is None
        listed = api.get("/v1/deliveries", headers=auth(operator), params={"state": "dead", "limit": 100}).json()
        assert dead["id"] in [d["id"] for d in listed["items"]]
        assert metric(hooks, "caj_notifications_dead_total") >= dead_before + 1
        assert metric(hooks, "caj_notifications_deliveries_by_state", state="dead") >= 1
        mine = api.get("/v1/notifications", headers=auth(agency.key)).json()["items"]
        assert mine[0]["delivery"]["state"] == "dead", "it stays in the agency's notifications"

        assert api.post(f"/v1/deliveries/{dead['id']}/retry", headers=auth(agency.key)).status_code == 403
        retried = api.post(f"/v1/deliveries/{dead['id']}/retry", headers=auth(operator))
        assert retried.status_code == 200 and retried.json()["state"] == "pending"
        assert api.post(f"/v1/deliveries/{dead['id']}/retry", headers=auth(operator)).status_code == 409
        delivered = wait_delivery(api, coordinator, agency, lambda d: d["state"] == "delivered")
    assert delivered["attempts"] == len(SCHEDULE) + 2
    assert len(receiver.received(agency.path)) == len(SCHEDULE) + 2
    [dead_event] = events_about(kafka_bootstrap, NOTIFICATIONS_DEAD_LETTER.name, dead["id"], 1)
    assert dead_event.get_data()["attempts"] == len(SCHEDULE) + 1


# -- restarts ----------------------------------------------------------------------------------
def test_a_restart_in_the_middle_of_a_schedule_loses_nothing_and_sends_nothing_twice(
        hooks, receiver, keys, kafka_bootstrap):
    """It restarts the module's service (a second service in the same
    consumer group would take some of the events), so it and the next test
    come last in the file."""
    agency = Agency(keys)
    coordinator = keys.make("coordinator")
    url = receiver.script(agency.path, Reply(503, {"Retry-After": "10"}))
    with httpx.Client(base_url=hooks.base_url, timeout=30) as api:
        register(api, agency, url)
        status_changed(kafka_bootstrap, agency)
        first = wait_delivery(api, coordinator, agency, lambda d: d["attempts"] == 1)
    assert first["state"] == "pending" and first["next_attempt_at"]
    hooks.stop()
    stopped_at = time.monotonic()
    hooks.start(migrate=False)
    hooks.wait_status("/readyz", 200, timeout=120)
    if time.monotonic() - receiver.received(agency.path)[0].at < 9:
        assert len(receiver.received(agency.path)) == 1, "the restart sent nothing early"
    with httpx.Client(base_url=hooks.base_url, timeout=30) as api:
        delivered = wait_delivery(api, coordinator, agency, lambda d: d["state"] == "delivered", timeout=60)
    attempts = receiver.received(agency.path)
    assert len(attempts) == 2, "the schedule went on after the restart, and nothing was sent twice"
    assert attempts[1].at - attempts[0].at >= 10 - 0.1, "the second attempt kept its scheduled time"
    assert attempts[1].at > stopped_at
    assert delivered["attempts"] == 2 and [a["attempt"] for a in delivered["history"]] == [1, 2]
    assert attempts[0].headers["webhook-id"] == attempts[1].headers["webhook-id"] == delivered["id"]


def test_a_service_killed_mid_attempt_sends_it_again_with_the_same_id(hooks, receiver, keys, kafka_bootstrap):
    """At least once: the receiver had the request, the service died before
    recording the answer. Once the lease runs out the attempt is made again,
    with the same webhook-id (receivers drop what they already have), and
    the delivery ends delivered, once. Restarts the module's service: last."""
    agency = Agency(keys)
    coordinator = keys.make("coordinator")
    url = receiver.script(agency.path, Reply(200, delay=TIMEOUT * 0.8))
    with httpx.Client(base_url=hooks.base_url, timeout=30) as api:
        register(api, agency, url)
        status_changed(kafka_bootstrap, agency)
        receiver.wait_for(agency.path, 1)
    hooks.kill()  # the receiver is still holding the request
    hooks.start(migrate=False)
    hooks.wait_status("/readyz", 200, timeout=120)
    with httpx.Client(base_url=hooks.base_url, timeout=30) as api:
        delivered = wait_delivery(api, coordinator, agency, lambda d: d["state"] == "delivered", timeout=60)
    first, second = receiver.wait_for(agency.path, 2)
    assert len(receiver.received(agency.path)) == 2
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivered["id"]
    # Two sends in all, the second once the lease ran out: none was made while it held.
    assert second.at - first.at >= LEASE - 0.5, "not sent again before its lease ran out"
    assert delivered["attempts"] == 1 and len(delivered["history"]) == 1, "the unrecorded attempt left no trace"
