"""Dead webhook deliveries retried in bulk, through the notifications API
(`POST /v1/deliveries/{id}/retry`, one per delivery), as an operator would by hand."""

from dataclasses import dataclass, field

import httpx

PAGE = 100


@dataclass
class RetryReport:
    retried: list[str] = field(default_factory=list)
    # Deliveries the service refused to retry, with its reason (e.g. webhook_disabled).
    refused: dict[str, str] = field(default_factory=dict)


def dead_delivery_ids(client: httpx.Client, *, agency_id: str | None) -> list[str]:
    """Every dead delivery (of one agency, if given), read page by page before
    any is retried, so retrying does not shift the pages under us."""
    ids: list[str] = []
    params: dict[str, str | int] = {"state": "dead", "limit": PAGE}
    if agency_id:
        params["agency_id"] = agency_id
    while True:
        response = client.get("/v1/deliveries", params=params | {"offset": len(ids)})
        response.raise_for_status()
        page = response.json()
        ids.extend(item["id"] for item in page["items"])
        if not page["items"] or len(ids) >= page["total"]:
            return ids


def retry_dead(client: httpx.Client, *, agency_id: str | None) -> RetryReport:
    report = RetryReport()
    for delivery_id in dead_delivery_ids(client, agency_id=agency_id):
        response = client.post(f"/v1/deliveries/{delivery_id}/retry")
        if response.status_code == 200:
            report.retried.append(delivery_id)
        elif response.status_code in (404, 409):
            # Gone, retried meanwhile, or its endpoint is disabled: the others still go.
            problem = response.json()
            report.refused[delivery_id] = problem.get("reason") or problem.get("title", str(response.status_code))
        else:
            response.raise_for_status()
    return report
