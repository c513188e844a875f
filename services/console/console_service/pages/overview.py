"""The overview (`/`): counts from the three APIs, each linking to its list.

Every figure comes from the APIs, asked with the user's key, so a partner
sees the counts of its own country: the requests' from their summary (one
call), the others from a page of one item (which gives the total). A section
the user's role may not read shows why, in words, and the rest still shows.
"""

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, get_args

from fastapi import APIRouter, Request
from starlette.responses import Response

from console_service.api import ApiProblem, ServiceApi
from console_service.web import Api, SignedIn, render
from shared.contracts.catalog import CENTRAL_ASIAN_COUNTRIES
from shared.contracts.requests import RequestStatus

router = APIRouter()

REQUEST_STATUSES: tuple[str, ...] = get_args(RequestStatus)
# Requests come from the Central Asian partners and, where the plan names it, Afghanistan.
REQUEST_COUNTRIES: tuple[str, ...] = (*CENTRAL_ASIAN_COUNTRIES, "AF")


@dataclass
class Section:
    """Figures (label -> count), or the problem that kept them from the page."""

    counts: dict[str, int] = field(default_factory=dict)
    problem: ApiProblem | None = None


async def _total(call: Awaitable[Any]) -> int:
    return int((await call)["total"])


async def _counts(calls: dict[str, Awaitable[Any]]) -> Section:
    results = await asyncio.gather(*(_total(call) for call in calls.values()), return_exceptions=True)
    for result in results:
        if isinstance(result, ApiProblem):
            return Section(problem=result)
        if isinstance(result, BaseException):
            raise result
    return Section(counts=dict(zip(calls, results, strict=True)))  # type: ignore[arg-type]


async def _request_sections(api: ServiceApi, key: str) -> tuple[Section, Section, Section]:
    """By status, by country and stale, from `GET /v1/requests/summary`."""
    try:
        summary = await api.get("requests", "/v1/requests/summary", key=key)
    except ApiProblem as problem:
        return Section(problem=problem), Section(problem=problem), Section(problem=problem)
    by_country = {country: summary["by_country"].get(country, 0) for country in REQUEST_COUNTRIES}
    return (Section(counts={status: summary["by_status"].get(status, 0) for status in REQUEST_STATUSES}),
            Section(counts=by_country), Section(counts={"stale": summary["stale"]}))


async def _offers(api: ServiceApi, key: str) -> Section:
    try:
        offers = (await api.get("requests", "/v1/offers", key=key))["items"]
    except ApiProblem as problem:
        return Section(problem=problem)
    activated = sum(1 for offer in offers if offer["activated"])
    return Section(counts={"activated": activated, "total": len(offers)})


@router.get("/")
async def overview(request: Request, session: SignedIn, api: Api) -> Response:
    key = session.api_key
    (by_status, by_country, stale_requests), offers, stale_commitments, deliveries = await asyncio.gather(
        _request_sections(api, key),
        _offers(api, key),
        _counts({"stale": api.get("catalog", "/v1/commitments", key=key, params={"stale": "true", "limit": 1})}),
        _counts({state: api.get("notifications", "/v1/deliveries", key=key, params={"state": state, "limit": 1})
                 for state in ("pending", "dead")}),
    )
    return render(request, "overview.html", {
        "by_status": by_status, "by_country": by_country, "offers": offers,
        "stale_requests": stale_requests, "stale_commitments": stale_commitments, "deliveries": deliveries,
    })
