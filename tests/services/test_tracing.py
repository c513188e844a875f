"""One request followed across the system, with real parts: the catalog,
requests and notifications services as processes on a real broker, and a
real webhook receiver on 127.0.0.1. A request submitted with a W3C
`traceparent` leaves its trace id in the requests service's log, on the
`requests.events` record, in the notifications service's log and on every
webhook attempt the receiver gets (a retry included); `caj trace` then reads
that path back from the logs."""

import asyncio
import json
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from opentelemetry.instrumentation.utils import suppress_http_instrumentation

from shared.contracts.requests import REQUEST_SUBMITTED
from shared.settings import REPO_ROOT
from shared.topics import REQUESTS_EVENTS
from shared.tracing import trace_id_of
from tests.databases import database_backends, empty_database
from tests.kafka_helpers import read_topic
from tests.notifications.receiver import Receiver, Reply
from tests.requests.conftest import auth
from tests.service_process import ServiceProcess

CAJ = str(Path(sys.executable).parent / "caj")  # the installed command line, as an operator runs it
COMMITMENT = "caj-2006-2-1-04"  # on request; Tajikistan may ask
FAST_DELIVERY = {
    "webhook_allow_private_addresses": "true",
    "webhook_retry_schedule_seconds": json.dumps([0.3, 0.6, 1.0]),
    "webhook_retry_jitter": "0.1",
    "webhook_timeout_seconds": "2",
    "delivery_poll_interval_seconds": "0.2",
}


@pytest.fixture(scope="module", params=database_backends())
def system(request, kafka_bootstrap, tmp_path_factory):
    """The three services, their logs side by side in one folder as `make up`
    keeps them; requests and notifications on each database."""
    directory = tmp_path_factory.mktemp("tracing")
    logs = directory / "log"
    for folder in (logs, directory / "requests", directory / "notifications"):
        folder.mkdir()
    with empty_database(request.param, directory / "requests") as requests_url, \
            empty_database(request.param, directory / "notifications") as notifications_url:
        catalog = ServiceProcess("catalog_service", database_url=f"sqlite:///{directory / 'catalog.sqlite3'}",
                                 kafka_bootstrap=kafka_bootstrap, log_path=logs / "catalog.log")
        requests_service = ServiceProcess("requests_service", database_url=requests_url,
                                          kafka_bootstrap=kafka_bootstrap, log_path=logs / "requests.log")
        notifications = ServiceProcess("notifications_service", database_url=notifications_url,
                                       kafka_bootstrap=kafka_bootstrap, log_path=logs / "notifications.log",
                                       **FAST_DELIVERY)
        services = [catalog, requests_service, notifications]
        try:
            for service in services:
                service.start()
            for service in services:
                service.wait_status("/readyz", 200, timeout=120)
            yield {"catalog": catalog, "requests": requests_service, "notifications": notifications, "logs": logs}
        finally:
            for service in services:
                service.stop()


def until_ok(call, what: str, timeout: float = 60.0) -> httpx.Response:
    """A new key or commitment reaches a service through Kafka a moment later."""
    deadline = time.monotonic() + timeout
    while (response := call()).status_code in (401, 404, 422) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert response.is_success, f"{what}: {response.status_code} {response.text}"
    return response


def log_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def wait_for_line(path: Path, predicate, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log_lines(path):
            if predicate(line):
                return line
        time.sleep(0.1)
    raise AssertionError(f"no such line in {path.name}; last lines:\n" + "\n".join(
        path.read_text().splitlines()[-20:]))


def test_one_trace_id_from_the_request_to_the_webhook_and_caj_trace_follows_it(system, keys, kafka_bootstrap):
    catalog, requests_service, notifications = system["catalog"], system["requests"], system["notifications"]
    logs: Path = system["logs"]
    commitment = httpx.get(f"{catalog.base_url}/v1/commitments/{COMMITMENT}", timeout=30).json()
    responsible = commitment["responsible_agencies"][0]
    responsible_key = keys.make("partner", country=responsible["country"], agency=responsible["id"])
    partner_key = keys.make("partner", country="TJ", agency=f"tj-trace-{uuid.uuid4().hex[:6]}")

    with Receiver() as receiver:
        path = f"/trace-{uuid.uuid4().hex[:8]}"
        # The first attempts fail: the retry must carry the same trace.
        url = receiver.script(path, Reply(status=500), Reply(status=500))
        until_ok(lambda: httpx.put(
            f"{notifications.base_url}/v1/agencies/{responsible['id']}/webhook", headers=auth(responsible_key),
            json={"url": url, "event_types": [REQUEST_SUBMITTED]}, timeout=30), "registering the webhook")

        trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
        # The caller is outside the system: an app built in this process earlier
        # in the session instruments httpx, which would put its own traceparent
        # in place of the caller's.
        with suppress_http_instrumentation():
            submitted = until_ok(lambda: httpx.post(
                f"{requests_service.base_url}/v1/requests", headers=auth(partner_key) | {
                    "traceparent": f"00-{trace_id}-{caller_span}-01", "Idempotency-Key": uuid.uuid4().hex},
                json={"commitment_id": COMMITMENT, "title": "Border posts", "description": "Equipment, training."},
                timeout=30), "submitting")
        request_id, http_request_id = submitted.json()["id"], submitted.headers["x-request-id"]

        # 1. The requests service's log: the request's lines carry the trace id.
        access = wait_for_line(logs / "requests.log", lambda line: line.get("request_id") == http_request_id
                               and line.get("logger") == "caj.access")
        assert access["trace_id"] == trace_id, access
        assert access["message"].startswith("POST /v1/requests 20")

        # 2. The requests.events record: the CloudEvents distributed-tracing extension.
        records = asyncio.run(read_topic(kafka_bootstrap, REQUESTS_EVENTS.name, timeout=60,
                                         until=lambda found: any(r.key == request_id.encode() for r in found)))
        [record] = [r for r in records if r.key == request_id.encode()]
        headers = dict(record.headers)
        assert headers["ce_type"] == REQUEST_SUBMITTED.encode()
        traceparent = headers["ce_traceparent"].decode()
        assert trace_id_of(traceparent) == trace_id
        assert traceparent.split("-")[2] != caller_span, "the service's own span is the event's parent"

        # 3. The notifications service's log: the record handled in the same trace.
        handled = wait_for_line(logs / "notifications.log", lambda line: line.get("trace_id") == trace_id
                                and REQUEST_SUBMITTED in line.get("message", ""))
        assert handled["logger"] == "shared.consumer" and handled["message"].startswith("processed")
        assert handled["event_id"] == headers["ce_id"].decode()

        # 4. The webhook: every attempt, the retries included, in the trace.
        wait_for_line(logs / "notifications.log", lambda line: line.get("trace_id") == trace_id
                      and "webhook delivery" in line.get("message", "") and ": delivered (200)" in line["message"])
        ours = [hit for hit in receiver.received(path)
                if json.loads(hit.body)["data"]["payload"].get("request_id") == request_id]
        assert len(ours) >= 2, "a failed attempt, then a retry"
        assert {trace_id_of(hit.headers.get("traceparent")) for hit in ours} == {trace_id}
        # Each attempt is a span of its own, under the span that handled the record.
        assert len({hit.headers["traceparent"] for hit in ours}) == len(ours)
        assert len({hit.headers["webhook-id"] for hit in ours}) == 1

    # 5. `caj trace` puts the path back together from the logs, by the
    # request id the service answered with.
    traced = subprocess.run([CAJ, "trace", http_request_id, "--log-dir", str(logs)],
                            capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert traced.returncode == 0, traced.stderr
    header, *rows = traced.stdout.splitlines()
    assert header.startswith(f"trace {trace_id}:") and "notifications" in header and "requests" in header
    services_in_order = [row.split()[2] for row in rows]
    assert services_in_order[0] == "requests" and "POST /v1/requests 201" in rows[0]
    assert rows[0].split()[:2] == ["+0.0", "ms"]
    # (The catalog consumes requests.events too: its lines may come before or after.)
    handled_at = next(i for i, row in enumerate(rows)
                      if services_in_order[i] == "notifications" and REQUEST_SUBMITTED in row and "processed" in row)
    delivered_at = next(i for i, row in enumerate(rows) if "webhook delivery" in row and "delivered" in row)
    failed_at = next(i for i, row in enumerate(rows) if "webhook delivery" in row and "failed (500)" in row)
    assert handled_at < failed_at < delivered_at, rows
    offsets = [float(row.split()[0].lstrip("+")) for row in rows]
    assert offsets == sorted(offsets) and offsets[-1] > 0

    unknown = subprocess.run([CAJ, "trace", "no-such-request", "--log-dir", str(logs)],
                             capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert unknown.returncode == 1 and "no log line" in unknown.stderr
