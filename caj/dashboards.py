"""Grafana dashboards, written as data here and rendered to
deploy/grafana/dashboards/*.json (`caj dashboards --write`): one per service
and one for the whole system. Written by code so that every panel has the
same shape, and so that the tests can list every expression a panel runs.

Expressions use fixed ranges ([5m]), not Grafana's $__rate_interval, so that
each one runs as it is against Prometheus's own API.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.settings import REPO_ROOT

DASHBOARD_DIR = REPO_ROOT / "deploy" / "grafana" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}  # as provisioning/datasources names it
PROBES = 'route!~"/livez|/readyz|/metrics"'


@dataclass(frozen=True)
class Panel:
    title: str
    # (PromQL, legend) pairs.
    queries: tuple[tuple[str, str], ...]
    unit: str = "short"
    kind: str = "timeseries"
    description: str = ""


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...] = field(default_factory=tuple)


def _red(selector: str) -> Row:
    """Rate, errors and duration per route, for the requests `selector` picks."""
    return Row("Requests per route (RED)", (
        Panel("Requests per second by route",
              ((f"sum by (service, method, route) (rate(caj_http_requests_total{{{selector}}}[5m]))",
                "{{service}} {{method}} {{route}}"),), unit="reqps"),
        Panel("Server errors (5xx) per second by route",
              ((f'sum by (service, method, route) (rate(caj_http_requests_total{{{selector},status=~"5.."}}[5m]))',
                "{{service}} {{method}} {{route}}"),), unit="reqps",
              description="Empty while nothing fails."),
        Panel("Client errors (4xx) per second by route and status",
              ((f'sum by (service, route, status) (rate(caj_http_requests_total{{{selector},status=~"4.."}}[5m]))',
                "{{service}} {{route}} {{status}}"),), unit="reqps"),
        Panel("p99 duration by route",
              ((f"histogram_quantile(0.99, sum by (service, route, le) "
                f"(rate(caj_http_request_duration_seconds_bucket{{{selector}}}[5m])))",
                "{{service}} {{route}}"),), unit="s"),
    ))


def _messaging(job: str) -> Row:
    where = f'job=~"{job}"'
    return Row("Kafka and outbox", (
        Panel("Consumer lag by group and topic",
              ((f"sum by (group, topic) (caj_kafka_consumer_lag{{{where}}})", "{{group}} {{topic}}"),)),
        Panel("Oldest unpublished outbox row",
              ((f"max by (service) (caj_outbox_oldest_unpublished_age_seconds{{{where}}})", "{{service}}"),),
              unit="s", description="Alert over 60 s (OutboxUnpublishedTooOld)."),
        Panel("Outbox backlog and rows set aside",
              ((f"max by (service) (caj_outbox_backlog{{{where}}})", "{{service}} unpublished"),
               (f"max by (service) (caj_outbox_set_aside_rows{{{where}}})", "{{service}} set aside"))),
        Panel("Records consumed per second by outcome",
              ((f"sum by (group, outcome) (rate(caj_kafka_messages_consumed_total{{{where}}}[5m]))",
                "{{group}} {{outcome}}"),), unit="ops"),
        Panel("Records produced per second by topic",
              ((f"sum by (topic, outcome) (rate(caj_kafka_messages_produced_total{{{where}}}[5m]))",
                "{{topic}} {{outcome}}"),), unit="ops"),
        Panel("Workers up, broker reachable",
              ((f"min by (service, worker) (caj_worker_up{{{where}}})", "{{service}} {{worker}}"),
               (f"min by (service) (caj_kafka_broker_reachable{{{where}}})", "{{service}} broker")),
              kind="stat"),
    ))


def _slo(service_pattern: str) -> Row:
    where = f'service=~"{service_pattern}"'
    return Row("Objectives (deploy/slo.yaml)", (
        Panel("Error budget left over 30 days", ((f"caj_slo:error_budget_remaining:ratio{{{where}}}", "{{slo}}"),),
              unit="percentunit", kind="bargauge"),
        Panel("Error ratio over 1 hour against the objective",
              ((f"caj_slo:error_ratio:rate1h{{{where}}}", "{{slo}}"),
               (f"1 - caj_slo:objective:ratio{{{where}}}", "{{slo}} budget")), unit="percentunit"),
    ))


def _service(name: str, title: str, description: str, own: Row) -> Dashboard:
    return Dashboard(uid=f"caj-{name}", title=f"caj-tracker: {title}", description=description, rows=(
        _red(f'service="{name}",{PROBES}'), own, _messaging(name), _slo(name),
    ))


DASHBOARDS = (
    Dashboard(
        uid="caj-system", title="caj-tracker: system",
        description="The three services together: traffic, messaging, notifications, activations, objectives.",
        rows=(
            _red(PROBES),
            _messaging("catalog|requests|notifications"),
            Row("Notifications and activations", (
                Panel("Webhook attempts per second by outcome",
                      (("sum by (outcome) (rate(caj_notifications_deliveries_total[5m]))", "{{outcome}}"),),
                      unit="ops"),
                Panel("Deliveries by state",
                      (("max by (state) (caj_notifications_deliveries_by_state)", "{{state}}"),)),
                Panel("Offers activated by country", (("max by (country) (caj_offer_activations)", "{{country}}"),),
                      kind="bargauge"),
                Panel("Event to receiver, p95",
                      (("histogram_quantile(0.95, sum by (le) "
                        "(rate(caj_notifications_delivery_latency_seconds_bucket[5m])))", "p95"),), unit="s"),
            )),
            _slo(".+"),
        ),
    ),
    _service("catalog", "catalog", "The plan's commitments, their progress and the Dialogue's reviews.", Row(
        "Catalog", (
            Panel("Commitments by pillar and condition",
                  (("max by (pillar, condition_type) (caj_catalog_commitments)",
                    "pillar {{pillar}} {{condition_type}}"),),
                  kind="bargauge"),
            Panel("Stale commitments by pillar",
                  (("max by (pillar) (caj_catalog_stale_commitments)", "pillar {{pillar}}"),),
                  description="In implementation with nothing reported for CATALOG_STALE_AFTER_DAYS."),
        ))),
    _service("requests", "requests", "Partner requests and the activation of Japan's conditional offers.", Row(
        "Requests and offers", (
            Panel("Requests accepted per second by country",
                  (("sum by (country) (rate(caj_requests_submitted_total[5m]))", "{{country}}"),), unit="reqps"),
            Panel("Requests by status", (("max by (status) (caj_requests_by_status)", "{{status}}"),)),
            Panel("Offers activated by country", (("max by (country) (caj_offer_activations)", "{{country}}"),),
                  kind="bargauge"),
            Panel("Stale requests by status", (("max by (status) (caj_requests_stale)", "{{status}}"),)),
        ))),
    _service("notifications", "notifications", "Notifications to agencies: inbox and signed webhooks.", Row(
        "Notifications and webhooks", (
            Panel("Notifications created per second by event type",
                  (("sum by (event_type) (rate(caj_notifications_created_total[5m]))", "{{event_type}}"),),
                  unit="ops"),
            Panel("Webhook attempts per second by outcome",
                  (("sum by (outcome) (rate(caj_notifications_deliveries_total[5m]))", "{{outcome}}"),),
                  unit="ops"),
            Panel("Deliveries by state, retry queue",
                  (("max by (state) (caj_notifications_deliveries_by_state)", "{{state}}"),
                   ("max(caj_notifications_retry_queue_depth)", "waiting for a retry"))),
            Panel("Deliveries died in the last hour",
                  (("sum(increase(caj_notifications_dead_total[1h]))", "dead"),), kind="stat"),
            Panel("Webhook endpoints", (("max by (state) (caj_notifications_webhook_endpoints)", "{{state}}"),),
                  kind="stat"),
            Panel("Event to receiver, p50 and p95",
                  tuple((f"histogram_quantile({q}, sum by (le) "
                         "(rate(caj_notifications_delivery_latency_seconds_bucket[5m])))", f"p{round(q * 100)}")
                        for q in (0.5, 0.95)), unit="s"),
        ))),
)


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {},
        "targets": [
            {"refId": chr(ord("A") + index), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for index, (expr, legend) in enumerate(panel.queries)
        ],
    }


def dashboard_json(dashboard: Dashboard) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    for row in dashboard.rows:
        panels.append({"id": len(panels) + 1, "type": "row", "title": row.title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        y += 1
        for index, panel in enumerate(row.panels):
            panels.append(_panel_json(panel, len(panels) + 1, x=12 * (index % 2), y=y + 8 * (index // 2)))
        y += 8 * ((len(row.panels) + 1) // 2)
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["caj-tracker"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": panels,
    }


def rendered() -> dict[Path, str]:
    """Each dashboard's file and its text, as committed."""
    return {
        DASHBOARD_DIR / f"{dashboard.uid.removeprefix('caj-')}.json":
            json.dumps(dashboard_json(dashboard), indent=2, ensure_ascii=False) + "\n"
        for dashboard in DASHBOARDS
    }

