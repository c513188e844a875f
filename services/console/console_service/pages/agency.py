"""The self-service pages every agency has, as webhook platforms give their
customers: the inbox (`/inbox`), and the webhook (`/webhook`) with its
settings, secret rotation (shown once), test event and delivery log.

What each role may do is the notifications API's rule: an agency manages
its own webhook only; coordinators and operators read every delivery and
retry dead ones; operators have no inbox."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from console_service.api import ApiProblem
from console_service.labels import ROUTED_EVENT_TYPES
from console_service.security import check_csrf
from console_service.sessions import ConsoleSession
from console_service.web import Api, SignedIn, render

router = APIRouter()

PAGE_SIZE = 50
NotificationId = Annotated[str, Path(max_length=36, pattern=r"^[A-Za-z0-9-]+$")]
DeliveryId = Annotated[str, Path(max_length=40, pattern=r"^[A-Za-z0-9_-]+$")]


# -- inbox ---------------------------------------------------------------------------
@router.get("/inbox")
async def inbox(request: Request, session: SignedIn, api: Api) -> Response:
    problem: ApiProblem | None = None
    page: dict[str, Any] = {"items": [], "total": 0}
    try:
        page = await api.get("notifications", "/v1/inbox", key=session.api_key, params={"limit": PAGE_SIZE})
    except ApiProblem as refused:
        if refused.status != 403:
            raise
        problem = refused  # operators own no inbox: said in words
    return render(request, "inbox.html", {"items": page["items"], "total": page["total"], "problem": problem})


@router.post("/inbox/{notification_id}/ack", dependencies=[Depends(check_csrf)])
async def acknowledge(session: SignedIn, api: Api, notification_id: NotificationId) -> Response:
    await api.post("notifications", f"/v1/inbox/{notification_id}/ack", key=session.api_key)
    return RedirectResponse("/inbox", status_code=303)


# -- webhook -------------------------------------------------------------------------
def _own_agency(session: ConsoleSession) -> str | None:
    principal = session.principal
    return principal.agency_id if principal.role == "partner" else None


async def _webhook_page(request: Request, session: ConsoleSession, api, *, state: str | None = None,
                        agency: str | None = None, offset: int = 0, secret: str | None = None,
                        notice: str | None = None, problem: ApiProblem | None = None,
                        form: dict[str, Any] | None = None, status_code: int = 200) -> Response:
    key, own = session.api_key, _own_agency(session)
    webhook = None
    if own:
        try:
            webhook = await api.get("notifications", f"/v1/agencies/{own}/webhook", key=key)
        except ApiProblem as missing:
            if missing.status != 404:
                raise
    deliveries = await api.get("notifications", "/v1/deliveries", key=key, params={
        "state": state, "agency_id": None if own else agency, "limit": PAGE_SIZE, "offset": offset})
    if form is None:
        form = {"url": webhook["url"] if webhook else "", "event_types": webhook["event_types"] if webhook else []}
    return render(request, "webhook.html", {
        "own_agency": own, "webhook": webhook, "deliveries": deliveries["items"], "total": deliveries["total"],
        "offset": offset, "page_size": PAGE_SIZE, "state": state, "agency": agency, "secret": secret,
        "notice": notice, "problem": problem, "form": form, "event_types": ROUTED_EVENT_TYPES,
        "may_retry": session.principal.role in ("coordinator", "operator"),
    }, status_code=status_code)


@router.get("/webhook")
async def webhook(request: Request, session: SignedIn, api: Api,
                  state: Annotated[str | None, Query(pattern="^(pending|delivered|dead)?$")] = None,
                  agency: Annotated[str | None, Query(max_length=64)] = None,
                  offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> Response:
    return await _webhook_page(request, session, api, state=state or None, agency=agency or None, offset=offset)


def _refused(problem: ApiProblem) -> int:
    if problem.status >= 500:
        raise problem
    return problem.status if problem.status in (403, 404, 409) else 422


@router.post("/webhook", dependencies=[Depends(check_csrf)])
async def save_webhook(request: Request, session: SignedIn, api: Api,
                       url: Annotated[str, Form(max_length=2000)] = "",
                       event_types: Annotated[list[str] | None, Form()] = None) -> Response:
    own = _own_agency(session) or "-"
    chosen = list(event_types or [])
    try:
        saved = await api.put("notifications", f"/v1/agencies/{own}/webhook", key=session.api_key,
                              json={"url": url, "event_types": chosen})
    except ApiProblem as problem:
        return await _webhook_page(request, session, api, problem=problem, form={"url": url, "event_types": chosen},
                                   status_code=_refused(problem))
    # A first registration answers with the secret: shown now, and never again.
    return await _webhook_page(request, session, api, secret=saved.get("secret"), notice="saved")


@router.post("/webhook/rotate-secret", dependencies=[Depends(check_csrf)])
async def rotate_secret(request: Request, session: SignedIn, api: Api) -> Response:
    own = _own_agency(session) or "-"
    try:
        rotated = await api.post("notifications", f"/v1/agencies/{own}/webhook/rotate-secret", key=session.api_key)
    except ApiProblem as problem:
        return await _webhook_page(request, session, api, problem=problem, status_code=_refused(problem))
    return await _webhook_page(request, session, api, secret=rotated["secret"], notice="rotated")


@router.post("/webhook/test", dependencies=[Depends(check_csrf)])
async def send_test(request: Request, session: SignedIn, api: Api) -> Response:
    own = _own_agency(session) or "-"
    try:
        await api.post("notifications", f"/v1/agencies/{own}/webhook/test", key=session.api_key)
    except ApiProblem as problem:
        return await _webhook_page(request, session, api, problem=problem, status_code=_refused(problem))
    return await _webhook_page(request, session, api, notice="test_sent")


@router.get("/webhook/deliveries/{delivery_id}")
async def delivery(request: Request, session: SignedIn, api: Api, delivery_id: DeliveryId) -> Response:
    found = await api.get("notifications", f"/v1/deliveries/{delivery_id}", key=session.api_key)
    return render(request, "delivery.html", {
        "delivery": found, "may_retry": session.principal.role in ("coordinator", "operator"), "problem": None})


@router.post("/webhook/deliveries/{delivery_id}/retry", dependencies=[Depends(check_csrf)])
async def retry(request: Request, session: SignedIn, api: Api, delivery_id: DeliveryId) -> Response:
    try:
        await api.post("notifications", f"/v1/deliveries/{delivery_id}/retry", key=session.api_key)
    except ApiProblem as problem:
        status = _refused(problem)
        found = await api.get("notifications", f"/v1/deliveries/{delivery_id}", key=session.api_key)
        return render(request, "delivery.html", {
            "delivery": found, "may_retry": session.principal.role in ("coordinator", "operator"),
            "problem": problem}, status_code=status)
    return RedirectResponse(f"/webhook/deliveries/{delivery_id}", status_code=303)
