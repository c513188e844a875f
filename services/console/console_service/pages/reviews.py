"""The review report (`/reviews/{id}`): the catalog's report of a review
meeting, a stacked bar of status by pillar drawn as SVG on the server, the
changes since the previous review, a CSV download and a print stylesheet."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from console_service.api import ApiProblem, ServiceApi
from console_service.charts import STATUS_COLOURS, stacked_bars
from console_service.web import Api, SignedIn, render

router = APIRouter()

ReviewId = Annotated[str, Path(max_length=100, pattern=r"^[A-Za-z0-9-]+$")]


async def _find_review(api: ServiceApi, key: str, review_id: str) -> str:
    """The plan a review belongs to: the console's address names the review only."""
    for plan in (await api.get("catalog", "/v1/plans", key=key))["items"]:
        reviews = (await api.get("catalog", f"/v1/plans/{plan['id']}/reviews", key=key))["items"]
        if any(review["id"] == review_id for review in reviews):
            return plan["id"]
    raise ApiProblem(404, "review_not_found", "No such review meeting")


@router.get("/reviews/{review_id}")
async def review_page(request: Request, session: SignedIn, api: Api, review_id: ReviewId) -> Response:
    key = session.api_key
    plan_id = await _find_review(api, key, review_id)
    report: dict[str, Any] = await api.get("catalog", f"/v1/plans/{plan_id}/reviews/{review_id}/report", key=key)
    chart = stacked_bars([(f"{pillar['number']}. {pillar['name']}", pillar["counts"]) for pillar in report["pillars"]])
    changes = [(pillar, change) for pillar in report["pillars"] for change in pillar["changes"]]
    return render(request, "review.html", {
        "report": report, "plan_id": plan_id, "chart": chart, "colours": STATUS_COLOURS, "changes": changes,
    })


@router.get("/reviews/{review_id}/report.csv")
async def review_csv(session: SignedIn, api: Api, review_id: ReviewId) -> Response:
    key = session.api_key
    plan_id = await _find_review(api, key, review_id)
    body = await api.get_text("catalog", f"/v1/plans/{plan_id}/reviews/{review_id}/report", key=key,
                              params={"format": "csv"})
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{plan_id}-{review_id}.csv"'})
