"""The requests list (`/requests`): filters, sorting, pagination and counts,
each a parameter of the requests API's list, which applies the caller's scope."""

from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from console_service.api import ApiProblem
from console_service.pages.overview import REQUEST_COUNTRIES, REQUEST_STATUSES
from console_service.web import Api, SignedIn, render

router = APIRouter()

PAGE_SIZE = 50
Sort = Literal["-created_at", "created_at", "-updated_at", "updated_at", "status", "-status", "country", "-country"]


def _blank_is_none(value: str | None) -> str | None:
    return value or None


@router.get("/requests")
async def requests_list(
    request: Request,
    session: SignedIn,
    api: Api,
    status: Annotated[str | None, Query(max_length=40)] = None,
    country: Annotated[str | None, Query(max_length=2)] = None,
    commitment: Annotated[str | None, Query(max_length=100)] = None,
    stale: Annotated[str | None, Query(max_length=5)] = None,
    sort: Annotated[Sort, Query()] = "-created_at",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    filters = {
        "status": _blank_is_none(status), "country": _blank_is_none(country),
        "commitment": _blank_is_none(commitment), "stale": stale if stale in ("true", "false") else None,
    }
    params: dict[str, Any] = {
        "status": filters["status"], "country": filters["country"], "commitment_id": filters["commitment"],
        "stale": filters["stale"], "sort": sort, "limit": PAGE_SIZE, "offset": (page - 1) * PAGE_SIZE,
    }
    problem: ApiProblem | None = None
    listing: dict[str, Any] = {"items": [], "total": 0}
    try:
        listing = await api.get("requests", "/v1/requests", key=session.api_key, params=params)
    except ApiProblem as refused:
        if refused.status not in (400, 422):
            raise
        problem = refused  # a filter the API refuses: said next to the filter form

    def link(**changes: Any) -> str:
        """This list with some parameters changed (a sort, a page), the rest kept."""
        values = {**filters, "sort": sort, "page": page, **changes}
        return "/requests?" + urlencode({name: value for name, value in values.items() if value not in (None, "")})

    total = int(listing["total"])
    last_page = max(1, -(-total // PAGE_SIZE))
    return render(request, "requests_list.html", {
        "items": listing["items"], "total": total, "page": page, "last_page": last_page,
        "first_row": (page - 1) * PAGE_SIZE + 1 if listing["items"] else 0,
        "last_row": (page - 1) * PAGE_SIZE + len(listing["items"]),
        "filters": filters, "sort": sort, "problem": problem, "link": link,
        "statuses": REQUEST_STATUSES, "countries": REQUEST_COUNTRIES,
    })
