"""Review meetings under /v1/plans/{plan_id}/reviews, and their reports."""

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from sqlmodel import Session

from catalog_service.reviews import (
    CSV_COLUMNS,
    ReviewCreate,
    ReviewList,
    ReviewRead,
    ReviewReport,
    ReviewReportCache,
    plan_reviews,
    record_review,
    report_csv,
    report_inputs,
    review_read,
    review_report,
)
from catalog_service.router import Catalog, Clock, PlanId, _plan, only_known_parameters
from shared.dependencies import Caller, Runtime, read_session
from shared.errors import NotFound

router = APIRouter(prefix="/v1", tags=["reviews"])

ReviewId = Annotated[str, Path(max_length=100, pattern=r"^[A-Za-z0-9-]+$")]


@router.post(
    "/plans/{plan_id}/reviews", status_code=201, response_model=ReviewRead,
    summary="Record a meeting that reviews the plan's progress (coordinators)",
    responses={403: {"description": "Not a coordinator"}, 404: {"description": "No such plan"},
               422: {"description": "Not a valid meeting: an empty title or place, a date before the plan"}},
    dependencies=[only_known_parameters()],
)
async def create_review(runtime: Runtime, principal: Caller, clock: Clock, snapshot: Catalog, plan_id: PlanId,
                        body: ReviewCreate) -> Response:
    now = clock()

    def work(session: Session) -> ReviewRead:
        return record_review(session, principal=principal, snapshot=snapshot, plan_id=plan_id, body=body, now=now)

    review = await runtime.writer.run(work)
    return Response(review.model_dump_json(), status_code=201, media_type="application/json",
                    headers={"Location": review.links["self"]})


@router.get("/plans/{plan_id}/reviews", response_model=ReviewList, summary="The plan's review meetings, by date",
            responses={404: {"description": "No such plan"}}, dependencies=[only_known_parameters()])
def list_reviews(runtime: Runtime, snapshot: Catalog, plan_id: PlanId) -> ReviewList:
    _plan(snapshot, plan_id)
    with read_session(runtime) as session:
        return ReviewList(items=[review_read(row) for row in plan_reviews(session, plan_id)])


@router.get("/plans/{plan_id}/reviews/{review_id}", response_model=ReviewRead, summary="One review meeting",
            responses={404: {"description": "No such plan or review meeting"}},
            dependencies=[only_known_parameters()])
def get_review(runtime: Runtime, snapshot: Catalog, plan_id: PlanId, review_id: ReviewId) -> ReviewRead:
    _plan(snapshot, plan_id)
    with read_session(runtime) as session:
        row = next((row for row in plan_reviews(session, plan_id) if row.id == review_id), None)
    if row is None:
        raise NotFound("review_not_found", "No such review meeting",
                       f"There is no review meeting {review_id!r} of plan {plan_id!r}.")
    return review_read(row)


@router.get(
    "/plans/{plan_id}/reviews/{review_id}/report", response_model=ReviewReport,
    summary="The plan's state as of the review's date, per pillar, with what changed since the previous review",
    description="Computed from the append-only progress reports: a report counts when its `as_of` is on or before "
                "the review's date, whenever it was recorded; requests and activations count when they happened "
                "by the end of that day (UTC). With `format=csv`: one row per commitment, columns "
                + ", ".join(CSV_COLUMNS) + ".",
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
               404: {"description": "No such plan or review meeting"}},
    dependencies=[only_known_parameters("format")],
)
def get_review_report(request: Request, runtime: Runtime, snapshot: Catalog, plan_id: PlanId, review_id: ReviewId,
                      format: Annotated[Literal["json", "csv"], Query(description="json (default) or csv")] = "json",
                      ) -> Response:
    cache: ReviewReportCache = request.app.state.review_reports
    with read_session(runtime) as session:
        # Read before the report, so a kept report is at least as new as its key.
        key = (snapshot.fingerprint, plan_id, review_id, format, report_inputs(session, plan_id))

        def render() -> bytes:
            report = review_report(session, snapshot, plan_id, review_id)
            return report_csv(report).encode() if format == "csv" else report.model_dump_json().encode()

        body = cache.get_or_render(key, render)
    if format == "csv":
        filename = f"{plan_id}-{review_id}.csv"
        return Response(body, media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})
    return Response(body, media_type="application/json")
