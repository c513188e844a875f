"""The plan (`/plans/{plan_id}`): its commitments by pillar and section, with
condition, current progress and staleness, filtered by the catalog's own
list parameters; and one commitment (`/commitments/{id}`), its verbatim text
in its paragraph, its progress history and a form to report progress."""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from console_service.api import ApiProblem, ServiceApi
from console_service.security import check_csrf
from console_service.web import Api, SignedIn, render
from shared.contracts.catalog import ConditionType, ProgressStatus

router = APIRouter()

CATALOG_PAGE = 100  # the catalog's largest page
PLAN_ID = Annotated[str, Path(max_length=64, pattern=r"^[a-z0-9-]+$")]
COMMITMENT_ID = Annotated[str, Path(max_length=100, pattern=r"^[a-z0-9-]+$")]
CONDITIONS: tuple[str, ...] = get_args(ConditionType)
PROGRESS_STATUSES: tuple[str, ...] = get_args(ProgressStatus)


async def all_commitments(api: ServiceApi, key: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every page of the catalog's list for these filters."""
    items: list[dict[str, Any]] = []
    while True:
        page = await api.get("catalog", "/v1/commitments", key=key,
                             params={**params, "limit": CATALOG_PAGE, "offset": len(items)})
        items.extend(page["items"])
        if not page["items"] or len(items) >= page["total"]:
            return items


@router.get("/plans")
async def plans(request: Request, session: SignedIn, api: Api) -> Response:
    """The plan, or the first of several, with the filters given."""
    listed = (await api.get("catalog", "/v1/plans", key=session.api_key))["items"]
    if not listed:
        return render(request, "error.html", {"status": 404, "reason": None, "problem": None}, status_code=404)
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"/plans/{listed[0]['id']}{query}", status_code=303)


@dataclass
class Section:
    title: str
    commitments: list[dict[str, Any]]


@router.get("/plans/{plan_id}")
async def plan_page(
    request: Request, session: SignedIn, api: Api, plan_id: PLAN_ID,
    pillar: Annotated[str | None, Query(max_length=1)] = None,
    condition: Annotated[str | None, Query(max_length=40)] = None,
    status: Annotated[str | None, Query(max_length=40)] = None,
    stale: Annotated[str | None, Query(max_length=5)] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    key = session.api_key
    filters = {"pillar": pillar or None, "condition": condition or None, "status": status or None,
               "stale": stale if stale in ("true", "false") else None, "q": q or None}
    plan = await api.get("catalog", f"/v1/plans/{plan_id}", key=key)
    problem: ApiProblem | None = None
    shown: list[dict[str, Any]] = []
    try:
        shown, stale_ones, reviews = await asyncio.gather(
            all_commitments(api, key, {"plan_id": plan_id, **filters}),
            all_commitments(api, key, {"plan_id": plan_id, "stale": "true"}),
            api.get("catalog", f"/v1/plans/{plan_id}/reviews", key=key),
        )
    except ApiProblem as refused:
        if refused.status not in (400, 422):
            raise
        problem, stale_ones, reviews = refused, [], {"items": []}  # a filter the catalog refuses
    stale_ids = {item["id"] for item in stale_ones}
    pillars = []
    for _pillar_number, in_pillar in groupby(shown, key=lambda item: item["pillar"]["number"]):
        rows = list(in_pillar)
        sections = [Section(title, list(items)) for title, items in groupby(rows, key=lambda item: item["section"])]
        pillars.append((rows[0]["pillar"], sections))
    return render(request, "plan.html", {
        "plan": plan, "pillars": pillars, "total": len(shown), "stale_ids": stale_ids, "filters": filters,
        "problem": problem, "conditions": CONDITIONS, "progress_statuses": PROGRESS_STATUSES,
        "reviews": reviews["items"], "clear_link": f"/plans/{plan_id}",
    })


def paragraph_around(source: str, start: int, end: int) -> tuple[str, str, str]:
    """The paragraph (a line of the plan's text) holding [start, end), cut
    into the text before, the span itself and the text after."""
    first = source.rfind("\n", 0, start) + 1
    last = source.find("\n", end)
    last = len(source) if last == -1 else last
    return source[first:start], source[start:end], source[end:last]


async def _commitment_page(request: Request, session, api: ServiceApi, commitment_id: str, *,
                           problem: ApiProblem | None = None, form: dict[str, str] | None = None,
                           status_code: int = 200) -> Response:
    key = session.api_key
    commitment = await api.get("catalog", f"/v1/commitments/{commitment_id}", key=key)
    source, history, stale_page = await asyncio.gather(
        api.get_text("catalog", f"/v1/plans/{commitment['plan_id']}/source", key=key),
        api.get("catalog", f"/v1/commitments/{commitment_id}/progress", key=key, params={"limit": 100}),
        all_commitments(api, key, {"plan_id": commitment["plan_id"], "stale": "true"}),
    )
    span = commitment["source"]
    before, highlighted, after = paragraph_around(source, span["start"], span["end"])
    principal = session.principal
    responsible = {agency["id"] for agency in commitment["responsible_agencies"]}
    may_report = principal.role == "coordinator" or (principal.role == "partner" and principal.agency_id in responsible)
    return render(request, "commitment.html", {
        "commitment": commitment, "before": before, "highlighted": highlighted, "after": after,
        "reports": history["items"], "stale": any(item["id"] == commitment_id for item in stale_page),
        "may_report": may_report, "progress_statuses": PROGRESS_STATUSES, "problem": problem,
        "form": form or {"as_of": datetime.now(UTC).date().isoformat()},
    }, status_code=status_code)


@router.get("/commitments/{commitment_id}")
async def commitment_page(request: Request, session: SignedIn, api: Api, commitment_id: COMMITMENT_ID) -> Response:
    return await _commitment_page(request, session, api, commitment_id)


@router.post("/commitments/{commitment_id}/progress", dependencies=[Depends(check_csrf)])
async def report_progress(
    request: Request, session: SignedIn, api: Api, commitment_id: COMMITMENT_ID,
    status: Annotated[str, Form(max_length=40)] = "",
    as_of: Annotated[str, Form(max_length=20)] = "",
    summary: Annotated[str, Form(max_length=10_000)] = "",
    evidence_title: Annotated[str, Form(max_length=600)] = "",
    evidence_url: Annotated[str, Form(max_length=2_100)] = "",
) -> Response:
    body: dict[str, Any] = {"status": status, "as_of": as_of, "summary": summary}
    if evidence_title or evidence_url:
        body["evidence"] = [{"title": evidence_title, "url": evidence_url or None}]
    try:
        await api.post("catalog", f"/v1/commitments/{commitment_id}/progress", key=session.api_key, json=body)
    except ApiProblem as problem:
        if problem.status >= 500:
            raise
        form = {"status": status, "as_of": as_of, "summary": summary, "evidence_title": evidence_title,
                "evidence_url": evidence_url}
        return await _commitment_page(request, session, api, commitment_id, problem=problem, form=form,
                                      status_code=problem.status if problem.status in (403, 404, 409) else 422)
    return RedirectResponse(f"/commitments/{commitment_id}#progress", status_code=303)
