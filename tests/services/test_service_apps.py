"""The three services as real processes on the real broker: health, metrics,
problem+json errors and structured logs."""

import asyncio
import json
import time
import uuid

import httpx
import pytest
from sqlalchemy import create_engine, text

from shared.events import new_event, to_kafka
from shared.topics import CATALOG_COMMITMENTS
from tests.kafka_helpers import produce_raw
from tests.service_process import ready_services

PACKAGES = ("catalog_service", "requests_service", "notifications_service")


@pytest.fixture(scope="module")
def running_services(kafka_bootstrap, tmp_path_factory):
    with ready_services(PACKAGES, kafka_bootstrap=kafka_bootstrap,
                        directory=tmp_path_factory.mktemp("services")) as services:
        yield services


@pytest.mark.parametrize("package", PACKAGES)
def test_health_endpoints(running_services, package):
    service = running_services[package]
    assert httpx.get(service.base_url + "/livez").json() == {"status": "alive"}
    ready = httpx.get(service.base_url + "/readyz")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert checks["database"]["ok"] and checks["kafka"]["ok"]
    if package != "catalog_service":
        assert checks["consumers"]["ok"]


@pytest.mark.parametrize("package", PACKAGES)
def test_unknown_route_is_problem_json(running_services, package):
    response = httpx.get(running_services[package].base_url + "/v1/no-such-thing")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 404 and body["reason"] == "not_found" and body["instance"] == "/v1/no-such-thing"


def test_a_method_not_allowed_lists_every_method_of_the_path(running_services):
    """The path has a route per method; Allow names them all, not only the
    first route's."""
    base = running_services["notifications_service"].base_url
    response = httpx.patch(base + "/v1/agencies/tj-some-agency/webhook")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["allow"] == "DELETE, GET, PUT"
    assert response.json()["reason"] == "method_not_allowed"


@pytest.mark.parametrize("package", PACKAGES)
def test_metrics_use_route_templates_and_expose_the_outbox(running_services, package):
    service = running_services[package]
    httpx.get(service.base_url + "/livez")
    httpx.get(service.base_url + "/v1/anything/" + uuid.uuid4().hex)
    metrics = httpx.get(service.base_url + "/metrics").text
    assert 'caj_http_requests_total{method="GET",route="/livez",service="' in metrics
    assert 'route="__unmatched__"' in metrics
    assert "/v1/anything/" not in metrics
    assert f'caj_outbox_backlog{{service="{package.removesuffix("_service")}"}} 0.0' in metrics
    assert "caj_outbox_oldest_unpublished_age_seconds" in metrics
    assert "caj_http_request_duration_seconds_bucket" in metrics


def test_request_id_is_echoed_and_on_the_log_line(running_services):
    service = running_services["catalog_service"]
    request_id = "test-" + uuid.uuid4().hex
    response = httpx.get(service.base_url + "/livez", headers={"X-Request-ID": request_id})
    assert response.headers["x-request-id"] == request_id
    generated = httpx.get(service.base_url + "/livez").headers["x-request-id"]
    assert len(generated) == 32
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in service.log_path.read_text().splitlines() if line.startswith("{")]
        ours = [line for line in lines if line.get("request_id") == request_id]
        assert all(line["logger"] == "caj.access" for line in ours), "one access line per request"
        if ours:
            assert ours[0]["service"] == "catalog" and ours[0]["status"] == 200
            assert {"time", "level", "logger", "message"} <= set(ours[0])
            return
        time.sleep(0.2)
    raise AssertionError("no log line carries the request id")


async def test_a_catalog_event_reaches_both_consuming_services(running_services, kafka_bootstrap):
    """The plumbing between services: one record on catalog.commitments is
    consumed once by requests and once by notifications, and recorded in each
    one's inbox."""
    event = new_event(
        type="org.caj-tracker.test.plumbing.v1", source="/tests/plumbing", subject="probe", data={"probe": True}
    )
    record = to_kafka(event, key="probe")
    await produce_raw(
        kafka_bootstrap, CATALOG_COMMITMENTS.name, value=record.value, key=record.key, headers=record.headers
    )
    for package in ("requests_service", "notifications_service"):
        engine = create_engine(running_services[package].database_url)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with engine.connect() as connection:
                    count = connection.execute(
                        text("SELECT count(*) FROM processed_events WHERE event_id = :id"), {"id": event.get_id()}
                    ).scalar()
                if count:
                    break
                await asyncio.sleep(0.3)
            assert count == 1, f"{package} did not consume the event"
        finally:
            engine.dispose()
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(running_services[package].base_url + "/metrics")).text
        assert 'caj_kafka_messages_consumed_total{group=' in metrics
        assert 'topic="catalog.commitments"' in metrics
        assert "caj_kafka_consumer_lag{" in metrics
