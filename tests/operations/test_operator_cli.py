"""The operator's command line against real processes: `caj stack status`
(text and --json) reads each service's /readyz and /metrics, and
`caj deliveries retry --dead --agency X` sends one agency's dead webhook
deliveries again through the notifications API."""

import json
import os
import subprocess

import httpx
import pytest

from shared.settings import REPO_ROOT
from tests.conftest import free_port
from tests.notifications.receiver import Receiver, Reply
from tests.notifications.test_webhooks import FAST_DELIVERY, SCHEDULE, Agency, register, status_changed, wait_delivery
from tests.requests.conftest import auth
from tests.service_process import ServiceProcess

CAJ = str(REPO_ROOT / ".venv" / "bin" / "caj")
PACKAGES = {"catalog": "catalog_service", "requests": "requests_service", "notifications": "notifications_service"}


def run_caj(*args: str, ports: dict[str, int], **env: str) -> subprocess.CompletedProcess:
    """The CLI as an operator runs it, finding each service by its settings' port."""
    environment = dict(os.environ, **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()}, **env)
    return subprocess.run([CAJ, *args], capture_output=True, text=True, timeout=120, env=environment)


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory):
    directory = tmp_path_factory.mktemp("operator-cli")
    settings = {"notifications": FAST_DELIVERY, "requests": {}, "catalog": {}}
    services = {
        name: ServiceProcess(package, database_url=f"sqlite:///{directory / (name + '.sqlite3')}",
                             kafka_bootstrap=kafka_bootstrap, log_path=directory / f"{name}.log",
                             **settings[name]).start()
        for name, package in PACKAGES.items()
    }
    try:
        for service in services.values():
            service.wait_status("/readyz", 200, timeout=120)
        # The console calls the three; `caj stack status` reports it beside them.
        services["console"] = ServiceProcess(
            "console_service", database_url="sqlite://", kafka_bootstrap=kafka_bootstrap,
            log_path=directory / "console.log",
            **{f"{name}_url": services[name].base_url for name in PACKAGES}).start(migrate=False)
        services["console"].wait_status("/readyz", 200, timeout=120)
        yield services
    finally:
        for service in services.values():
            service.stop()


def ports_of(services: dict[str, ServiceProcess]) -> dict[str, int]:
    return {name: service.port for name, service in services.items()}


def test_stack_status_json_shows_each_service_ready_with_its_lag_outbox_and_deliveries(stack):
    status = run_caj("stack", "status", "--json", ports=ports_of(stack))
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["ready"] is True
    services = {service["name"]: service for service in report["services"]}
    assert set(services) == {*PACKAGES, "console"}
    for name, service in services.items():
        assert service["ready"] and service["not_ready"] == {}, service
        assert service["url"] == stack[name].base_url
        if name != "console":  # it keeps no data, so it has no outbox
            assert service["outbox_backlog"] == 0 and service["outbox_set_aside"] == 0
            assert service["outbox_oldest_age_seconds"] == 0
    # Each consuming service reports its groups (the catalog's follows requests.events).
    assert services["notifications"]["consumer_lag"] and services["requests"]["consumer_lag"]
    assert all(isinstance(lag, int) and lag >= 0 for lag in services["notifications"]["consumer_lag"].values())
    assert set(services["notifications"]["deliveries_by_state"]) >= {"pending", "delivered", "dead"}


def test_stack_status_says_which_service_is_not_ready_and_why(stack, kafka_bootstrap, tmp_path):
    """A requests service whose database was never migrated, and a notifications
    port where nothing listens: the text says why for each, and it exits 1."""
    unmigrated = ServiceProcess("requests_service", database_url=f"sqlite:///{tmp_path / 'empty.sqlite3'}",
                                kafka_bootstrap=kafka_bootstrap, log_path=tmp_path / "requests.log")
    unmigrated.start(migrate=False)
    try:
        unmigrated.wait_status("/livez", 200, timeout=120)
        ports = ports_of(stack) | {"requests": unmigrated.port, "notifications": free_port()}
        status = run_caj("stack", "status", ports=ports)
        assert status.returncode == 1
        lines = status.stdout.splitlines()
        assert any(line.startswith("catalog") and " ready " in line for line in lines), status.stdout
        assert any(line.startswith("requests") and "not ready" in line for line in lines), status.stdout
        assert "run migrations" in status.stdout, "the reason /readyz gives"
        assert any(line.startswith("notifications") and " down " in line for line in lines), status.stdout
        assert "not answering: ConnectError" in status.stdout
        assert any(line.startswith("console") and " ready " in line for line in lines), status.stdout
        report = json.loads(run_caj("stack", "status", "--json", ports=ports).stdout)
        requests_status = next(service for service in report["services"] if service["name"] == "requests")
        assert report["ready"] is False and "database" in requests_status["not_ready"]
    finally:
        unmigrated.stop()


def test_deliveries_retry_dead_sends_one_agencys_dead_deliveries_again(stack, keys, kafka_bootstrap):
    notifications = stack["notifications"]
    operator = keys.make("operator")
    failing = [Reply(500)] * (len(SCHEDULE) + 1)  # every attempt of the schedule fails: dead
    with Receiver() as receiver, httpx.Client(base_url=notifications.base_url, timeout=30) as api:
        ours, other, gone = Agency(keys), Agency(keys), Agency(keys)
        for agency, replies in ((ours, failing), (other, failing), (gone, [Reply(410)])):
            assert register(api, agency, receiver.script(agency.path, *replies)).status_code in (200, 201)
            status_changed(kafka_bootstrap, agency)
        for agency in (ours, other, gone):
            wait_delivery(api, agency.key, agency, lambda delivery: delivery["state"] == "dead", timeout=60)
        # A 410 disabled the third agency's endpoint: the gauge says so.
        metrics_text = httpx.get(notifications.base_url + "/metrics").text
        assert 'caj_notifications_webhook_endpoints{state="disabled"} 1.0' in metrics_text

        retried = run_caj("deliveries", "retry", "--dead", "--agency", ours.id, "--url", notifications.base_url,
                          ports=ports_of(stack), CAJ_API_KEY=operator)
        assert retried.returncode == 0, retried.stdout + retried.stderr
        assert f"retried 1 dead deliveries of {ours.id}" in retried.stdout
        delivered = wait_delivery(api, ours.key, ours, lambda delivery: delivery["state"] == "delivered")
        assert delivered["last_status_code"] == 200
        assert len(receiver.received(ours.path)) == len(failing) + 1
        # Another agency's dead delivery is left alone.
        dead = api.get("/v1/deliveries", headers=auth(operator), params={"agency_id": other.id}).json()["items"]
        assert [delivery["state"] for delivery in dead] == ["dead"]
        assert len(receiver.received(other.path)) == len(failing)

        refused = run_caj("deliveries", "retry", "--dead", "--agency", gone.id, "--url", notifications.base_url,
                          "--api-key", operator, ports=ports_of(stack))
        assert refused.returncode == 1
        assert "webhook_disabled" in refused.stderr and "retried 0 dead deliveries" in refused.stdout


def test_deliveries_retry_with_an_unknown_key_says_so(stack):
    unknown = run_caj("deliveries", "retry", "--dead", "--url", stack["notifications"].base_url,
                      "--api-key", "caj_0000000000000000_unknown", ports=ports_of(stack))
    assert unknown.returncode == 2 and "answered 401" in unknown.stderr
