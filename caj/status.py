"""What `caj stack status` shows: each service's readiness and why, read from
its /readyz, and its backlog figures, read from its /metrics (the same
numbers Prometheus scrapes, so the two never disagree)."""

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from caj.services import ServiceInfo


@dataclass
class ServiceStatus:
    name: str
    url: str
    reachable: bool = False
    ready: bool = False
    # The failing checks of /readyz, by name, with what they say.
    not_ready: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    consumer_lag: dict[str, int] = field(default_factory=dict)  # by consumer group, over its partitions
    outbox_backlog: int | None = None
    outbox_oldest_age_seconds: float | None = None
    outbox_set_aside: int | None = None
    deliveries_by_state: dict[str, int] = field(default_factory=dict)  # notifications only

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _samples(metrics_text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    by_name: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            by_name[sample.name].append((sample.labels, sample.value))
    return by_name


def service_status(info: ServiceInfo, base_url: str, *, timeout: float = 5.0) -> ServiceStatus:
    status = ServiceStatus(name=info.name, url=base_url)
    try:
        with httpx.Client(base_url=base_url, timeout=timeout) as client:
            readyz = client.get("/readyz")
            metrics_text = client.get("/metrics").text
    except httpx.HTTPError as error:
        status.error = f"not answering: {type(error).__name__}"
        return status
    status.reachable = True
    status.ready = readyz.status_code == 200
    try:
        checks = readyz.json().get("checks", {})
    except ValueError:
        checks = {}
        status.not_ready["readyz"] = f"answered {readyz.status_code} without a JSON body"
    status.not_ready |= {name: check.get("detail", "") for name, check in checks.items() if not check.get("ok")}

    samples = _samples(metrics_text)
    lag: dict[str, float] = defaultdict(float)
    for labels, value in samples.get("caj_kafka_consumer_lag", []):
        lag[labels["group"]] += value
    status.consumer_lag = {group: int(value) for group, value in sorted(lag.items())}

    def own(name: str) -> float | None:
        values = [value for labels, value in samples.get(name, []) if labels.get("service") == info.name]
        return values[0] if values else None

    backlog, age, set_aside = (own("caj_outbox_backlog"), own("caj_outbox_oldest_unpublished_age_seconds"),
                               own("caj_outbox_set_aside_rows"))
    status.outbox_backlog = None if backlog is None else int(backlog)
    status.outbox_oldest_age_seconds = age
    status.outbox_set_aside = None if set_aside is None else int(set_aside)
    status.deliveries_by_state = {
        labels["state"]: int(value) for labels, value in samples.get("caj_notifications_deliveries_by_state", [])
    }
    return status


def render_text(statuses: list[ServiceStatus]) -> list[str]:
    lines = []
    for status in statuses:
        state = "ready" if status.ready else ("not ready" if status.reachable else "down")
        lines.append(f"{status.name:<14} {state:<10} {status.url}")
        if status.error:
            lines.append(f"  {status.error}")
        for check, detail in status.not_ready.items():
            lines.append(f"  {check}: {detail or 'failing'}")
        if not status.reachable:
            continue
        if status.outbox_backlog is not None:
            lines.append(f"  outbox: {status.outbox_backlog} unpublished, oldest "
                         f"{status.outbox_oldest_age_seconds or 0:.1f}s; {status.outbox_set_aside or 0} set aside")
        for group, lag in status.consumer_lag.items():
            lines.append(f"  consumer lag {group}: {lag}")
        if status.deliveries_by_state:
            states = ", ".join(f"{state} {count}" for state, count in sorted(status.deliveries_by_state.items()))
            lines.append(f"  deliveries: {states}")
    return lines
