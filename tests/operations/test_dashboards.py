"""The dashboards: committed as generated, on the provisioned data source,
and the system dashboard shows what operators asked for."""

import json

import yaml

from caj.dashboards import DASHBOARD_DIR, rendered
from shared.settings import REPO_ROOT


def test_the_committed_dashboards_are_the_generators_output():
    expected = rendered()
    assert sorted(DASHBOARD_DIR.glob("*.json")) == sorted(expected), "run `caj dashboards --write`"
    for path, text in expected.items():
        assert path.read_text() == text, f"{path.name} differs: run `caj dashboards --write`"


def test_every_panel_queries_the_provisioned_data_source():
    sources = yaml.safe_load((REPO_ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = sources["datasources"][0]["uid"]
    for path in DASHBOARD_DIR.glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == uid
            assert panel["targets"] and all(target["expr"] for target in panel["targets"]), panel["title"]


def test_the_system_dashboard_shows_red_lag_outbox_deliveries_activations_and_budgets():
    system = json.loads((DASHBOARD_DIR / "system.json").read_text())
    queries = " ".join(target["expr"] for panel in system["panels"] for target in panel.get("targets", []))
    for metric in ("caj_http_requests_total", "caj_http_request_duration_seconds_bucket", "caj_kafka_consumer_lag",
                   "caj_outbox_oldest_unpublished_age_seconds", "caj_notifications_deliveries_total",
                   "caj_offer_activations", "caj_slo:error_budget_remaining:ratio"):
        assert metric in queries, metric
    assert "by (service, method, route)" in queries, "RED per route"
    assert "by (outcome)" in queries and "by (country)" in queries


def test_each_service_has_its_own_dashboard():
    uids = {json.loads(path.read_text())["uid"] for path in DASHBOARD_DIR.glob("*.json")}
    assert uids == {"caj-system", "caj-catalog", "caj-requests", "caj-notifications"}
