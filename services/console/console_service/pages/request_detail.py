"""One request (`/requests/{id}`): its timeline, the history interleaved with
the notifications sent about it and their delivery state, and the actions
the signed-in user may take on it.

Which actions are offered is the requests API's answer
(`allowed_transitions`), and every move is the API's transition call: a move
it refuses for the state (409) or the input (422) is said in words next to
the form; one the user's role never makes is the 403 page.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from console_service.api import ApiProblem
from console_service.i18n import gettext as _
from console_service.security import check_csrf
from console_service.web import Api, SignedIn, render

router = APIRouter()

RequestId = Annotated[str, Path(max_length=36)]
NOTIFICATIONS_SHOWN = 100


def action_label(to_status: str) -> str:
    """An action by where it takes the request."""
    labels = {
        "under_review": _("Review"),
        "info_requested": _("Ask for information"),
        "approved": _("Approve"),
        "declined": _("Decline"),
        "in_progress": _("Start"),
        "fulfilled": _("Mark fulfilled"),
        "withdrawn": _("Withdraw"),
    }
    return labels.get(to_status, to_status)


@dataclass
class TimelineEntry:
    at: datetime
    kind: str  # "change" or "notification"
    item: dict[str, Any]


def _moment(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def timeline(history: list[dict[str, Any]], notifications: list[dict[str, Any]]) -> list[TimelineEntry]:
    """History and notifications in time order; a change before the notifications it caused."""
    entries = [TimelineEntry(_moment(item["at"]), "change", item) for item in history]
    entries += [TimelineEntry(_moment(item["created_at"]), "notification", item) for item in notifications]
    return sorted(entries, key=lambda entry: (entry.at, entry.kind != "change"))


async def _page(request: Request, session, api, request_id: str, *, problem: ApiProblem | None = None,
                failed_action: str | None = None, note: str = "", status_code: int = 200) -> Response:
    key = session.api_key
    detail = await api.get("requests", f"/v1/requests/{request_id}", key=key)
    history = (await api.get("requests", f"/v1/requests/{request_id}/history", key=key))["items"]
    notifications: list[dict[str, Any]] = []
    notifications_problem: ApiProblem | None = None
    try:
        listing = await api.get("notifications", "/v1/notifications", key=key,
                                params={"subject": request_id, "limit": NOTIFICATIONS_SHOWN})
        notifications = listing["items"]
    except ApiProblem as unavailable:
        notifications_problem = unavailable  # the history still shows; the gap is said
    return render(request, "request_detail.html", {
        "item": detail, "timeline": timeline(history, notifications),
        "notifications_problem": notifications_problem,
        "actions": [(to, action_label(to)) for to in detail.get("allowed_transitions", [])],
        "problem": problem, "failed_action": failed_action, "note": note,
    }, status_code=status_code)


@router.get("/requests/{request_id}")
async def request_detail(request: Request, session: SignedIn, api: Api, request_id: RequestId) -> Response:
    return await _page(request, session, api, request_id)


@router.post("/requests/{request_id}/transitions", dependencies=[Depends(check_csrf)])
async def move_request(request: Request, session: SignedIn, api: Api, request_id: RequestId,
                       to: Annotated[str, Form(max_length=40)],
                       note: Annotated[str, Form(max_length=5000)] = "") -> Response:
    try:
        await api.post("requests", f"/v1/requests/{request_id}/transitions", key=session.api_key,
                       json={"to": to, "note": note.strip() or None})
    except ApiProblem as refused:
        if refused.status in (409, 422):
            return await _page(request, session, api, request_id, problem=refused, failed_action=to, note=note,
                               status_code=refused.status)
        raise  # 403 and 404 are their pages
    return RedirectResponse(f"/requests/{request_id}", status_code=303)
