"""Prometheus rules from the service-level objectives in deploy/slo.yaml.

For each objective: the error ratio recorded over every window the alerts
look at, the error budget left over the period, and two alerts in the
multiwindow, multi-burn-rate pattern of the Google SRE Workbook: a page for a
fast burn, a ticket for a slow one. Each alert fires only while both its long
window (the budget really burned) and its short window (it is still burning)
are over the burn rate, so it starts soon and stops soon.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shared.metrics import HTTP_DURATION
from shared.settings import REPO_ROOT

SLO_FILE = REPO_ROOT / "deploy" / "slo.yaml"
RULES_FILE = REPO_ROOT / "deploy" / "prometheus" / "rules" / "slo.yml"
RUNBOOK = "docs/runbook.md"

# Probes are not users: they stay out of every HTTP indicator.
PROBE_ROUTES = "/livez|/readyz|/metrics"
ERROR_RATIO = "caj_slo:error_ratio:rate{window}"
BUDGET_REMAINING = "caj_slo:error_budget_remaining:ratio"
OBJECTIVE = "caj_slo:objective:ratio"


@dataclass(frozen=True)
class BurnAlert:
    name: str
    severity: str
    # (long window, short window, burn rate): fires when either pair burns.
    conditions: tuple[tuple[str, str, float], ...]
    for_: str
    what: str


BURN_ALERTS = (
    BurnAlert("SLOErrorBudgetBurnFast", "page", (("1h", "5m", 14.4), ("6h", "30m", 6.0)), "2m",
              "2% of the 30-day error budget in 1 hour, or 5% in 6 hours"),
    BurnAlert("SLOErrorBudgetBurnSlow", "ticket", (("1d", "2h", 3.0), ("3d", "6h", 1.0)), "15m",
              "10% of the 30-day error budget in 1 or 3 days"),
)
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


def runbook_url(alert: str) -> str:
    """Where the runbook explains an alert: its section, by the heading's anchor."""
    return f"{RUNBOOK}#{alert.lower()}"


class SLOError(ValueError):
    pass


def _http_selector(service: str, extra: str = "") -> str:
    return f'service="{service}",route!~"{PROBE_ROUTES}"{extra}'


def error_ratio_expression(objective: dict[str, Any], window: str) -> str:
    """The share of bad events over `window`, as PromQL."""
    sli, service = objective["sli"], objective["service"]
    kind = sli.get("kind")
    if kind == "availability":
        server_errors = _http_selector(service, ',status=~"5.."')
        # No 5xx yet means no such series at all: count it as zero, not as no data.
        bad = f"(sum(rate(caj_http_requests_total{{{server_errors}}}[{window}])) or vector(0))"
        total = f"sum(rate(caj_http_requests_total{{{_http_selector(service)}}}[{window}]))"
    elif kind == "latency":
        threshold = float(sli["threshold_seconds"])
        if threshold not in HTTP_DURATION._upper_bounds:
            raise SLOError(f"{objective['name']}: {threshold} s is not a bucket of {HTTP_DURATION._name}; "
                           f"choose one of {HTTP_DURATION._upper_bounds[:-1]}")
        count = f"sum(rate(caj_http_request_duration_seconds_count{{{_http_selector(service)}}}[{window}]))"
        in_time = _http_selector(service, f',le="{threshold}"')
        within = f"sum(rate(caj_http_request_duration_seconds_bucket{{{in_time}}}[{window}]))"
        bad, total = f"({count} - {within})", count
    elif kind == "ratio":
        bad, total = sli["errors"].replace("{window}", window), sli["total"].replace("{window}", window)
    else:
        raise SLOError(f"{objective['name']}: unknown indicator kind {kind!r} (availability, latency or ratio)")
    return f"{bad} / {total}"


def _check(objective: dict[str, Any]) -> None:
    missing = {"name", "service", "description", "objective", "sli"} - set(objective)
    if missing:
        raise SLOError(f"objective {objective.get('name', '?')} lacks {sorted(missing)}")
    if not 0 < objective["objective"] < 1:
        raise SLOError(f"{objective['name']}: the objective is a ratio between 0 and 1")


def _rule_group(objective: dict[str, Any], period: str) -> dict[str, Any]:
    _check(objective)
    name, target = objective["name"], float(objective["objective"])
    budget = round(1 - target, 10)
    labels = {"slo": name, "service": objective["service"]}
    rules: list[dict[str, Any]] = [
        {"record": ERROR_RATIO.format(window=window), "expr": error_ratio_expression(objective, window),
         "labels": dict(labels)}
        for window in (*WINDOWS, period)
    ]
    rules.append({"record": OBJECTIVE, "expr": f"vector({target})", "labels": dict(labels)})
    rules.append({
        "record": BUDGET_REMAINING,
        "expr": f'1 - {ERROR_RATIO.format(window=period)}{{slo="{name}"}} / {budget}',
        "labels": dict(labels),
    })
    for alert in BURN_ALERTS:
        expression = " or ".join(
            f'({ERROR_RATIO.format(window=long)}{{slo="{name}"}} > ({rate} * {budget}) and '
            f'{ERROR_RATIO.format(window=short)}{{slo="{name}"}} > ({rate} * {budget}))'
            for long, short, rate in alert.conditions
        )
        rules.append({
            "alert": alert.name,
            "expr": expression,
            "for": alert.for_,
            "labels": {"severity": alert.severity, **labels},
            "annotations": {
                "summary": f"{name}: error budget burning fast enough to spend {alert.what}",
                "description": f"Objective: {objective['description']}, {target:.1%} over {period}. "
                               "Error ratio over the long window: {{ $value | humanizePercentage }}.",
                "runbook_url": runbook_url(alert.name),
            },
        })
    return {"name": f"slo-{name}", "rules": rules}


def load(path: Path = SLO_FILE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def render(slos: dict[str, Any] | None = None) -> str:
    """deploy/prometheus/rules/slo.yml as it should be."""
    slos = slos if slos is not None else load()
    names = [objective["name"] for objective in slos["objectives"]]
    if len(set(names)) != len(names):
        raise SLOError("objective names must be unique")
    groups = [_rule_group(objective, slos["period"]) for objective in slos["objectives"]]
    header = ("# Generated by `caj slo rules --write` from deploy/slo.yaml: edit that file, not this one.\n"
              "# tests/operations/test_rules.py checks the two agree.\n")
    # One expression per line, however long: easier to read and to diff than folded.
    return header + yaml.safe_dump({"groups": groups}, sort_keys=False, width=100_000, allow_unicode=True)
