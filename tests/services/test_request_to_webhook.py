"""A partner's requests on their way to the responsible agency's webhook,
through the three services as real processes on the real broker: each one
arrives exactly once, and every hand-off on the way shows in its latency
histogram on /metrics."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from shared.contracts.requests import REQUEST_SUBMITTED
from tests.notifications.receiver import Receiver
from tests.requests.conftest import Keys, auth
from tests.service_process import ServiceProcess

COMMITMENT = "caj-2006-2-1-04"  # on request; Tajikistan may ask
REQUESTS = 40


@pytest.fixture(scope="module")
def keys(kafka_bootstrap) -> Keys:
    return Keys(kafka_bootstrap)


@pytest.fixture(scope="module")
def receiver():
    with Receiver() as running:
        yield running


@pytest.fixture(scope="module")
def system(kafka_bootstrap, tmp_path_factory):
    directory = tmp_path_factory.mktemp("request-to-webhook")
    settings = {
        "catalog_service": {},
        "requests_service": {"rate_limit_per_second": "1000", "rate_limit_burst": "1000"},
        "notifications_service": {"webhook_allow_private_addresses": "true"},
    }
    services = {
        package: ServiceProcess(package, database_url=f"sqlite:///{directory / (package + '.sqlite3')}",
                                kafka_bootstrap=kafka_bootstrap, log_path=directory / f"{package}.log",
                                **package_settings).start()
        for package, package_settings in settings.items()
    }
    try:
        for service in services.values():
            service.wait_status("/readyz", 200, timeout=120)
        yield services
    finally:
        for service in services.values():
            service.stop()


def hop_counts(service: ServiceProcess) -> dict[str, float]:
    """Observations per hop of caj_event_hop_latency_seconds on the service's /metrics."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(service.base_url + "/metrics").text):
        for sample in family.samples:
            if sample.name == "caj_event_hop_latency_seconds_count":
                counts[sample.labels["hop"]] = sample.value
    return counts


def until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


def test_requests_reach_the_responsible_agency_once_each_and_every_hop_is_measured(system, receiver, keys):
    catalog, requests_service, notifications = (system["catalog_service"], system["requests_service"],
                                                system["notifications_service"])
    coordinator = keys.make("coordinator")
    until(lambda: len(httpx.get(requests_service.base_url + "/v1/offers", headers=auth(coordinator))
                      .json().get("items", [])) >= 12, 60, "the offer board")
    agency = httpx.get(f"{catalog.base_url}/v1/commitments/{COMMITMENT}").json()["responsible_agencies"][0]
    agency_key = keys.make("partner", country=agency["country"], agency=agency["id"])
    hook = receiver.script(f"/{agency['id']}")
    until(lambda: httpx.put(f"{notifications.base_url}/v1/agencies/{agency['id']}/webhook", headers=auth(agency_key),
                            json={"url": hook, "event_types": [REQUEST_SUBMITTED]}).status_code == 201,
          30, "the webhook to be registered")
    partners = [keys.make("partner", country="TJ", agency=f"tj-hops-{number}") for number in range(4)]
    for key in partners:
        until(lambda k=key: httpx.get(requests_service.base_url + "/v1/requests", headers=auth(k)).status_code == 200,
              30, "a partner key to reach the requests service")

    def submit(number: int) -> str:
        answer = httpx.post(requests_service.base_url + "/v1/requests", headers=auth(partners[number % 4]), timeout=30,
                            json={"commitment_id": COMMITMENT, "title": f"Border post {number}",
                                  "description": "Equipment and training."})
        assert answer.status_code == 201, answer.text
        return answer.json()["id"]

    # Concurrent submissions: commits, relay rounds, consumer runs and claims overlap.
    with ThreadPoolExecutor(max_workers=8) as pool:
        submitted = set(pool.map(submit, range(REQUESTS)))

    def arrived() -> list:
        return [received for received in receiver.received(f"/{agency['id']}")
                if received.body and json.loads(received.body)["data"]["payload"]["request_id"]
                in submitted]

    until(lambda: len(arrived()) >= REQUESTS, 60, "every request to reach the webhook")
    # Every delivery recorded (so nothing is left to send again), then nothing more may arrive.
    engine = create_engine(notifications.database_url)

    def delivered() -> int:
        # A connection per look: one kept open would read a single snapshot.
        with engine.connect() as connection:
            return connection.execute(text(
                "SELECT count(*) FROM webhook_deliveries WHERE agency_id = :agency AND state = 'delivered'"),
                {"agency": agency["id"]}).scalar_one()

    until(lambda: delivered() == REQUESTS, 30, "every delivery to be recorded")
    engine.dispose()
    request_ids = [json.loads(received.body)["data"]["payload"]["request_id"] for received in arrived()]
    assert sorted(request_ids) == sorted(submitted), "each request reaches the agency exactly once"
    assert len({received.headers["webhook-id"] for received in arrived()}) == REQUESTS

    # The requests service's relay, and the notifications service's consumer and dispatcher.
    assert hop_counts(requests_service).get("outbox_publish", 0) >= REQUESTS
    measured = until(lambda: (counts := hop_counts(notifications)) and all(
        counts.get(hop, 0) >= REQUESTS for hop in ("consume", "delivery_claim", "webhook_send")) and counts,
        10, "the notifications hops on /metrics")
    assert measured["consume"] >= REQUESTS
