"""The offer board (`/offers`): every conditional offer by country, each cell
dormant, requested or activated; agreements and evidence recorded through the
requests API, whose role rules (coordinators only) decide who may."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from console_service.api import ApiProblem
from console_service.pages.overview import REQUEST_COUNTRIES
from console_service.security import check_csrf
from console_service.web import Api, SignedIn, render

router = APIRouter()

CommitmentId = Annotated[str, Path(max_length=100, pattern=r"^[a-z0-9-]+$")]
RECORDABLE = {"regional_agreement": "agreements", "evidence": "evidence"}


def board_columns(offers: list[dict[str, Any]]) -> list[str]:
    """The Dialogue's countries first, then any other party an agreement names."""
    named = {country for offer in offers for country in offer["countries"]}
    others = sorted(named - set(REQUEST_COUNTRIES))
    return [country for country in REQUEST_COUNTRIES if country in named] + others


def interest_tally(offer: dict[str, Any]) -> tuple[int, int]:
    """How many concerned countries have shown interest (or more), of how many."""
    states = offer["countries"].values()
    return sum(1 for state in states if state != "dormant"), len(states)


async def _board(request: Request, session, api, *, problem: ApiProblem | None = None,
                 failed_offer: str | None = None, form: dict[str, str] | None = None,
                 status_code: int = 200) -> Response:
    offers = (await api.get("requests", "/v1/offers", key=session.api_key))["items"]
    return render(request, "offers.html", {
        "offers": offers, "columns": board_columns(offers), "tally": interest_tally,
        "recordable": [offer for offer in offers if offer["condition_type"] in RECORDABLE],
        "may_record": session.principal.role == "coordinator",
        "problem": problem, "failed_offer": failed_offer, "form": form or {},
    }, status_code=status_code)


@router.get("/offers")
async def offer_board(request: Request, session: SignedIn, api: Api) -> Response:
    return await _board(request, session, api)


@router.post("/offers/{commitment_id}/records", dependencies=[Depends(check_csrf)])
async def record_condition(
    request: Request, session: SignedIn, api: Api, commitment_id: CommitmentId,
    kind: Annotated[str, Form(max_length=40)],
    reference: Annotated[str, Form(max_length=600)] = "",
    parties: Annotated[str, Form(max_length=1200)] = "",
    note: Annotated[str, Form(max_length=6000)] = "",
) -> Response:
    """An agreement (with its parties) or evidence; the API checks the rest."""
    body: dict[str, Any] = {"reference": reference, "note": note or None}
    if kind == "agreements":
        body["parties"] = [part.strip().upper() for part in parties.replace(";", ",").split(",") if part.strip()]
    elif kind != "evidence":
        kind = "evidence"
    try:
        await api.post("requests", f"/v1/offers/{commitment_id}/{kind}", key=session.api_key, json=body)
    except ApiProblem as problem:
        if problem.status >= 500:
            raise
        form = {"reference": reference, "parties": parties, "note": note}
        return await _board(request, session, api, problem=problem, failed_offer=commitment_id, form=form,
                            status_code=problem.status if problem.status in (403, 404, 409) else 422)
    return RedirectResponse(f"/offers#record-{commitment_id}", status_code=303)
