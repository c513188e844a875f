"""A real Prometheus, with the project's config and rules, scraping the three
services as real processes on their own broker, after some real traffic: a
partner's request that activates an offer, the webhook that tells the
agency, reads of the catalog. Every expression of every rule, recording rule
and dashboard panel then runs through Prometheus's HTTP API: none may error,
and every one the traffic feeds must return data."""

import json
import re
import time
import uuid

import httpx
import pytest

from caj.dashboards import DASHBOARD_DIR
from tests.notifications.receiver import Receiver
from tests.operations.prometheus_process import PrometheusProcess, running_prometheus
from tests.operations.rules import rules
from tests.requests.conftest import auth
from tests.service_process import ServiceProcess

BORDER_POSTS = "caj-2006-2-1-04"  # on request: a request from Tajikistan activates it for TJ
JOBS = {"catalog": "catalog_service", "requests": "requests_service", "notifications": "notifications_service"}

# Expressions that a healthy system answers with nothing, and why. Anything
# else that comes back empty is a misspelt metric or label, or a gauge never set.
EMPTY_WHEN_HEALTHY = {
    # No server error happened: the series does not exist.
    re.compile(r'status=~"5\.\."'): "no 5xx",
    # Alerts: the comparison filters out every healthy series.
    re.compile(r"(==|>) ?\(?[0-9.]"): "an alert's threshold",
}


def panel_expressions() -> dict[str, str]:
    """Every query of every committed dashboard, named `dashboard / panel / refId`."""
    found = {}
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                found[f"{dashboard['uid']} / {panel['title']} / {target['refId']}"] = target["expr"]
    return found


def rule_expressions() -> dict[str, str]:
    return {
        (f"alert {rule['alert']}" if "alert" in rule else f"record {rule['record']}")
        + f" {rule.get('labels', {}).get('slo', '')}".rstrip(): rule["expr"]
        for rule in rules()
    }


def _wait_accepted(client: httpx.Client, path: str, key: str, timeout: float = 60) -> None:
    """A new key reaches a service through identity.keys, a moment after it is made."""
    deadline = time.monotonic() + timeout
    while client.get(path, headers=auth(key)).status_code == 401:
        assert time.monotonic() < deadline, f"the key never reached {client.base_url}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def system(kafka_bootstrap, tmp_path_factory, keys):
    directory = tmp_path_factory.mktemp("operations")
    settings = {
        "catalog_service": {},
        "requests_service": {"rate_limit_per_second": "1000", "rate_limit_burst": "1000"},
        "notifications_service": {"webhook_allow_private_addresses": "true", "delivery_poll_interval_seconds": "0.2"},
    }
    services = {
        job: ServiceProcess(package, database_url=f"sqlite:///{directory / (job + '.sqlite3')}",
                            kafka_bootstrap=kafka_bootstrap, log_path=directory / f"{job}.log",
                            **settings[package]).start()
        for job, package in JOBS.items()
    }
    try:
        with Receiver() as receiver:
            for service in services.values():
                service.wait_status("/readyz", 200, timeout=120)
            agency = f"tj-ops-{uuid.uuid4().hex[:8]}"
            partner = keys.make("partner", country="TJ", agency=agency)
            # The console is not started here: no rule or dashboard panel reads its metrics.
            with running_prometheus(directory, {job: f"127.0.0.1:{service.port}"
                                                for job, service in services.items()},
                                    leave_out=("console",)) as prometheus:
                # Scraped before the traffic: a rate sees only what changed between two scrapes.
                prometheus.wait_for('count(up{job=~"catalog|requests|notifications"} == 1) == 3', timeout=60)
                traffic(services, prometheus, receiver, partner, agency)
                yield services, prometheus, receiver, agency
    finally:
        for service in services.values():
            service.stop()


def traffic(services: dict[str, ServiceProcess], prometheus: PrometheusProcess, receiver: Receiver,
            partner: str, agency: str) -> None:
    """A webhook for the agency; reads of each service (one of a commitment
    that is not there), twice with a scrape between, so that rates see them;
    and a request that activates an offer and so notifies the agency."""
    with httpx.Client(base_url=services["notifications"].base_url, timeout=30) as notifications:
        _wait_accepted(notifications, "/v1/notifications", partner)
        hook = notifications.put(f"/v1/agencies/{agency}/webhook", headers=auth(partner),
                                 json={"url": receiver.script(f"/{agency}"), "event_types": []})
        assert hook.status_code in (200, 201), hook.text
    with httpx.Client(base_url=services["requests"].base_url, timeout=30) as requests_api:
        _wait_accepted(requests_api, "/v1/requests", partner)
    for _round in range(2):
        reads(services, partner)
        # Both rounds' counts must reach Prometheus in different scrapes.
        prometheus.wait_for('count(caj_http_requests_total{route=~"/v1/commitments|/v1/requests|/v1/notifications",'
                            f'status="200"}} >= {_round + 1}) == 3')
    with httpx.Client(base_url=services["requests"].base_url, timeout=30) as requests_api:
        deadline = time.monotonic() + 90
        while (submitted := requests_api.post(
                "/v1/requests", headers=auth(partner),
                json={"commitment_id": BORDER_POSTS, "title": "Border posts", "description": "Three posts."},
        )).status_code != 201:
            # The offer board fills from the catalog's topic shortly after start.
            assert time.monotonic() < deadline, submitted.text
            time.sleep(0.5)
    received = receiver.wait_for(f"/{agency}", 1, timeout=60)
    assert received, "the agency's webhook got nothing"


def reads(services: dict[str, ServiceProcess], partner: str) -> None:
    with httpx.Client(base_url=services["catalog"].base_url, timeout=30) as catalog:
        assert catalog.get("/v1/commitments", params={"requestable_by": "TJ"}).status_code == 200
        assert catalog.get(f"/v1/commitments/{BORDER_POSTS}").status_code == 200
        assert catalog.get("/v1/commitments/caj-2006-9-9-99").status_code == 404
    for job, path, missing in (("requests", "/v1/requests", f"/v1/requests/{uuid.uuid4()}"),
                               ("notifications", "/v1/notifications", f"/v1/deliveries/{uuid.uuid4()}")):
        assert httpx.get(services[job].base_url + path, headers=auth(partner), timeout=30).status_code == 200
        assert httpx.get(services[job].base_url + missing, headers=auth(partner), timeout=30).status_code == 404


def test_prometheus_scrapes_every_service(system):
    _services, prometheus, _receiver, _agency = system
    up = prometheus.wait_for('up{job=~"catalog|requests|notifications"} == 1', timeout=60)
    assert sorted(sample["metric"]["job"] for sample in up) == ["catalog", "notifications", "requests"]


def test_the_traffic_shows_in_prometheus(system):
    _services, prometheus, _receiver, _agency = system
    # Each of these waits until Prometheus has scraped what the traffic did.
    delivered = prometheus.wait_for('sum(caj_notifications_deliveries_total{outcome="delivered"}) > 0')
    assert float(delivered[0]["value"][1]) >= 1
    activated = prometheus.wait_for('caj_offer_activations{country="TJ"} > 0')
    assert float(activated[0]["value"][1]) >= 1
    assert prometheus.wait_for('caj_http_requests_total{job="catalog",route="/v1/commitments/{commitment_id}",'
                               'status="404"} > 0')
    endpoints = prometheus.wait_for('caj_notifications_webhook_endpoints{state="enabled"} > 0')
    assert float(endpoints[0]["value"][1]) == 1
    workers = prometheus.wait_for("caj_worker_up")
    names = {sample["metric"]["worker"] for sample in workers}
    assert names >= {"outbox-relay", "group-commit", "key-store", "webhook-dispatcher"}
    assert any(name.startswith("consumer:") for name in names), names
    assert all(sample["value"][1] == "1" for sample in workers)
    assert {s["metric"]["service"] for s in prometheus.wait_for("caj_kafka_broker_reachable == 1")} == set(JOBS)
    # Nothing failed and nothing was late: the objectives' budgets are whole. (`>= 0` waits out
    # the NaN a rule evaluated before the scrape that saw the delivery records: 0 of 0 events.)
    budget = prometheus.wait_for('caj_slo:error_budget_remaining:ratio{slo="notified-within-60s"} >= 0', timeout=90)
    assert float(budget[0]["value"][1]) == 1.0
    budget = prometheus.wait_for('caj_slo:error_budget_remaining:ratio{slo="catalog-availability"} >= 0', timeout=90)
    assert float(budget[0]["value"][1]) == 1.0


def test_every_rule_and_panel_expression_runs_and_the_fed_ones_return_data(system):
    _services, prometheus, _receiver, _agency = system
    # Once the objectives' rules have run over scraped traffic, everything else has had its chance too.
    prometheus.wait_for('caj_slo:error_ratio:rate5m{slo="notified-within-60s"}', timeout=90)
    prometheus.wait_for('caj_slo:error_ratio:rate5m{slo="requests-latency"}', timeout=90)
    expressions = rule_expressions() | panel_expressions()
    assert len(panel_expressions()) > 50 and len(rule_expressions()) > 90
    errors, empty = {}, {}
    for name, expression in expressions.items():
        answer = prometheus.query(expression)
        if answer["status"] != "success":
            errors[name] = answer.get("error")
        elif not answer["data"]["result"] and not any(p.search(expression) for p in EMPTY_WHEN_HEALTHY):
            empty[name] = expression
    assert errors == {}
    assert empty == {}, "\n".join(f"{name}: {expression}" for name, expression in empty.items())


def test_prometheus_evaluates_every_rule_without_error(system):
    _services, prometheus, _receiver, _agency = system
    prometheus.wait_for('caj_slo:error_budget_remaining:ratio{slo="requests-availability"}', timeout=90)
    groups = prometheus.api("rules")["data"]["groups"]
    loaded = [rule for group in groups for rule in group["rules"]]
    assert len(loaded) == len(rules())
    unhealthy = {rule["name"]: rule.get("lastError") for rule in loaded if rule["health"] != "ok"}
    assert unhealthy == {}


def test_every_metric_an_alert_watches_exists(system):
    """An alert's expression is empty when all is well, so it cannot show a
    misspelt metric: each metric it reads must be there (a labelled counter
    appears with its first increment, so dead letters are not yet)."""
    _services, prometheus, _receiver, _agency = system
    prometheus.wait_for('caj_slo:error_ratio:rate5m{slo="catalog-availability"}', timeout=90)
    names = set()
    for rule in rules():
        if "alert" in rule:
            # Metric names, not recording rules (those have colons and are checked above).
            names |= set(re.findall(r"\b(caj_[a-z0-9_]+|up)\b(?!:)", rule["expr"]))
    names.discard("caj_kafka_dead_letters_total")
    assert len(names) >= 10
    missing = [name for name in sorted(names)
               if not prometheus.query(f'count({{__name__="{name}"}})')["data"]["result"]]
    assert missing == []
