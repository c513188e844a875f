"""A partner agency's view of its country (`/country`): its country's
requests, the offers its country may request (the catalog's commitments
whose condition a request from that country counts toward), and a form that
submits a request through the requests API.

The form carries an idempotency key made when the form is shown: sending it
twice (a double click, a resend after a lost answer) makes one request.
"""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from console_service.api import ApiProblem
from console_service.security import check_csrf
from console_service.web import Api, SignedIn, render

router = APIRouter()

OFFERS_SHOWN = 100
REQUESTS_SHOWN = 50


def _country_of(session) -> str:
    country = session.principal.country
    if session.principal.role != "partner" or not country:
        # Coordinators and operators have no country of their own: the Requests page is theirs.
        raise ApiProblem(403, "partners_only", "This page is for partner agencies")
    return country


async def _page(request: Request, session, api, *, form: dict[str, str] | None = None,
                problem: ApiProblem | None = None, status_code: int = 200) -> Response:
    country = _country_of(session)
    key = session.api_key
    requests = await api.get("requests", "/v1/requests", key=key,
                             params={"country": country, "sort": "-updated_at", "limit": REQUESTS_SHOWN})
    offers = await api.get("catalog", "/v1/commitments", key=key,
                           params={"requestable_by": country, "limit": OFFERS_SHOWN})
    return render(request, "partner.html", {
        "country": country, "requests": requests["items"], "requests_total": requests["total"],
        "offers": offers["items"], "form": form or {},
        # A new key for each form shown; a refused form gets a new one too, since its body may change.
        "idempotency_key": str(uuid.uuid4()), "problem": problem,
    }, status_code=status_code)


@router.get("/country")
async def partner_view(request: Request, session: SignedIn, api: Api) -> Response:
    return await _page(request, session, api)


@router.post("/country/requests", dependencies=[Depends(check_csrf)])
async def submit_request(
    request: Request, session: SignedIn, api: Api,
    commitment_id: Annotated[str, Form(max_length=100)],
    title: Annotated[str, Form(max_length=200)],
    description: Annotated[str, Form(max_length=10_000)],
    idempotency_key: Annotated[str, Form(min_length=8, max_length=100)],
    reference: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    _country_of(session)
    body: dict[str, Any] = {"commitment_id": commitment_id, "title": title, "description": description,
                            "reference": reference.strip() or None}
    try:
        created = await api.post("requests", "/v1/requests", key=session.api_key, json=body,
                                 headers={"Idempotency-Key": idempotency_key})
    except ApiProblem as refused:
        if 400 <= refused.status < 500 and refused.status not in (401, 403):
            form = {"commitment_id": commitment_id, "title": title, "description": description,
                    "reference": reference}
            return await _page(request, session, api, form=form, problem=refused, status_code=refused.status)
        raise
    return RedirectResponse(f"/requests/{created['id']}", status_code=303)
