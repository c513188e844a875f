"""The catalog's public API under /v1/.

Handlers that read the in-memory snapshot are `async` on purpose: a sync
handler would cost a thread-pool hop per request. Progress reports are read
from the database and written through the group-commit writer."""

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlmodel import Session

from catalog_service.http_caching import cached_response
from catalog_service.iati import plan_to_iati_xml
from catalog_service.live import LiveCatalog
from catalog_service.reporting import (
    REPORT_ID_PATTERN,
    ProgressCreate,
    ProgressPage,
    ProgressReportRead,
    RecordedReport,
    get_report,
    list_reports,
    new_report_id,
    record_report,
)
from catalog_service.snapshot import AgencyRead, CatalogSnapshot, CommitmentFilter, CommitmentRead, PlanRead
from shared.contracts.catalog import CommitmentKind, ConditionType, CountryCode, ProgressStatus
from shared.dependencies import Caller, Page, Runtime, read_session
from shared.errors import Invalid, NotFound, Unavailable
from shared.openapi import may_answer

router = APIRouter(prefix="/v1", tags=["catalog"])

MAX_PAGE = 100
PlanId = Annotated[str, Path(max_length=64, description="A plan id, e.g. caj-2006")]
# Commitment ids are lower-case words, digits and hyphens; the pattern keeps
# anything else (e.g. NUL, which PostgreSQL refuses) away from queries.
CommitmentId = Annotated[str, Path(max_length=100, pattern=r"^[A-Za-z0-9-]+$")]
ReportId = Annotated[str, Path(pattern=REPORT_ID_PATTERN)]


class CommitmentPage(BaseModel):
    items: list[CommitmentRead]
    total: int
    limit: int
    offset: int
    next: str | None


class PlanList(BaseModel):
    items: list[PlanRead]


class AgencyList(BaseModel):
    items: list[AgencyRead]


@may_answer({503: "The catalog is still loading; see Retry-After"})
async def loaded_catalog(request: Request) -> CatalogSnapshot:
    snapshot = getattr(request.app.state, "catalog", None)
    if snapshot is None:
        raise Unavailable("catalog_loading", "The catalog is still loading", "Try again in a moment.",
                          retry_after=1)
    return snapshot


# Every catalog route that reads takes it: the route answers 503 until the snapshot is loaded.
Catalog = Annotated[CatalogSnapshot, Depends(loaded_catalog)]


async def service_clock(request: Request) -> Callable[[], datetime]:
    return request.app.state.clock


# The service's clock (catalog_service.main): reports' stamps, staleness.
Clock = Annotated[Callable[[], datetime], Depends(service_clock)]


def refuse_unknown_or_repeated(params, allowed: frozenset[str]) -> None:
    """A misspelt filter must not silently return everything, nor a repeated
    one silently keep its last value."""
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise Invalid(
            "unknown_parameter", "Unknown query parameter",
            f"{', '.join(unknown)} is not a parameter here; known: {', '.join(sorted(allowed))}",
        )
    repeated = sorted(name for name in set(params) if len(params.getlist(name)) > 1)
    if repeated:
        raise Invalid("repeated_parameter", "Repeated query parameter", f"{', '.join(repeated)} given more than once")


def only_known_parameters(*allowed: str):
    async def check(request: Request) -> None:
        refuse_unknown_or_repeated(request.query_params, frozenset(allowed))

    return Depends(check)


def _etag(snapshot: CatalogSnapshot, *parts: str) -> str:
    return '"' + hashlib.sha256("|".join((snapshot.fingerprint, *parts)).encode()).hexdigest()[:32] + '"'


def _json(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()


@router.get("/plans", response_model=PlanList, summary="The plans in the catalog",
            dependencies=[only_known_parameters()])
async def list_plans(request: Request, snapshot: Catalog) -> Response:
    body = PlanList(items=list(snapshot.plans.values())).model_dump_json().encode()
    return cached_response(request, body=body, etag=_etag(snapshot, "plans"), media_type="application/json")


def _plan(snapshot: CatalogSnapshot, plan_id: str) -> PlanRead:
    plan = snapshot.plans.get(plan_id)
    if plan is None:
        raise NotFound("plan_not_found", "No such plan", f"There is no plan {plan_id!r}.")
    return plan


@router.get("/plans/{plan_id}", response_model=PlanRead, summary="One plan, with counts by pillar and condition",
            responses={404: {"description": "No such plan"}}, dependencies=[only_known_parameters()])
async def get_plan(request: Request, snapshot: Catalog, plan_id: PlanId) -> Response:
    body = _plan(snapshot, plan_id).model_dump_json().encode()
    return cached_response(request, body=body, etag=_etag(snapshot, "plan", plan_id), media_type="application/json")


@router.get("/plans/{plan_id}/source", summary="The plan's source text; commitments' offsets point into it",
            response_class=Response,
            responses={200: {"content": {"text/plain": {}}}, 404: {"description": "No such plan"}},
            dependencies=[only_known_parameters()])
async def get_plan_source(request: Request, snapshot: Catalog, plan_id: PlanId) -> Response:
    _plan(snapshot, plan_id)
    body = snapshot.source_texts[plan_id].encode()
    return cached_response(request, body=body, etag=_etag(snapshot, "source", plan_id),
                           media_type="text/plain; charset=utf-8")


@router.get("/plans/{plan_id}/iati.xml", summary="The plan as IATI 2.03 activities",
            response_class=Response,
            responses={200: {"content": {"application/xml": {}}}, 404: {"description": "No such plan"}},
            dependencies=[only_known_parameters()])
async def get_plan_iati(request: Request, snapshot: Catalog, plan_id: PlanId) -> Response:
    plan = _plan(snapshot, plan_id)
    base_url = str(request.base_url).rstrip("/")
    body = plan_to_iati_xml(plan, snapshot.commitments_of(plan_id), base_url=base_url)
    return cached_response(request, body=body, etag=_etag(snapshot, "iati", plan_id, base_url),
                           media_type="application/xml")


class CommitmentQuery(BaseModel):
    """Filters and page of GET /v1/commitments. Validated as one model: one
    pass over the query string, and unknown parameters are refused."""

    model_config = ConfigDict(extra="forbid")

    plan_id: str | None = Field(default=None, max_length=64)
    pillar: int | None = Field(default=None, ge=1, le=5, description="Pillar number, 1-5")
    section: str | None = Field(
        default=None, max_length=200, description='Section code such as "2(2)", or its full heading'
    )
    actor: CountryCode | None = Field(default=None, description="A country that commits")
    beneficiary: CountryCode | None = Field(default=None, description="A country that benefits")
    requestable_by: CountryCode | None = Field(
        default=None, description="A country whose request counts toward the condition"
    )
    condition: ConditionType | None = Field(default=None, description="Condition type")
    kind: CommitmentKind | None = None
    sector: str | None = Field(default=None, pattern=r"^\d{5}$", description="OECD DAC CRS purpose code")
    q: str | None = Field(
        default=None, min_length=2, max_length=200, description="Words in the text, section or condition"
    )
    status: ProgressStatus | None = Field(default=None, description="The status that holds now (`progress.status`)")
    stale: bool | None = Field(
        default=None, description="In implementation with nothing reported for the staleness period (or not)"
    )
    limit: int = Field(default=50, ge=1, le=MAX_PAGE)
    offset: int = Field(default=0, ge=0, le=1_000_000)


_COMMITMENT_QUERY_FIELDS = frozenset(CommitmentQuery.model_fields)


def _openapi_query_parameters(model: type[BaseModel]) -> list[dict]:
    """Document a query model's fields as OpenAPI parameters."""
    schema = model.model_json_schema()
    return [
        {"name": name, "in": "query", "required": False, "schema": field_schema,
         "description": field_schema.get("description", "")}
        for name, field_schema in schema["properties"].items()
    ]


def parse_commitment_query(request: Request) -> CommitmentQuery:
    """Validated here rather than by FastAPI's per-parameter machinery, which
    cost more than the rest of the request (see bench/catalog_list.py)."""
    params = request.query_params
    refuse_unknown_or_repeated(params, _COMMITMENT_QUERY_FIELDS)
    try:
        return CommitmentQuery.model_validate(dict(params))
    except ValidationError as error:
        raise RequestValidationError(
            [dict(item, loc=("query", *item["loc"])) for item in error.errors(include_url=False)]
        ) from error


@router.get("/commitments", response_model=CommitmentPage, summary="Commitments, filtered and paginated",
            openapi_extra={"parameters": _openapi_query_parameters(CommitmentQuery)},
            responses={422: {"description": "A filter is not valid or not known"},
                       503: {"description": "The catalog is still loading; see Retry-After"}})
async def list_commitments(request: Request) -> Response:
    # Called, not declared as a dependency: on the busiest route a dependency
    # layer costs about 15% of the throughput (BENCHMARKS.md, catalog list).
    snapshot = await loaded_catalog(request)
    query_string = request.scope["query_string"]
    cache_key, now = query_string, None
    if b"stale" in query_string:
        # Which commitments are stale depends on the time: such a page is
        # remembered for the set of stale ones it was rendered for.
        now = request.app.state.clock()
        cache_key = b"%s#%d" % (query_string, snapshot.stale_count(now))
    page = snapshot.cached_page(cache_key)
    if page is None:  # only valid queries are remembered, so a hit needs no validation
        query = parse_commitment_query(request)
        if query.stale is not None and now is None:  # the name was percent-encoded
            now = request.app.state.clock()
            cache_key = b"%s#%d" % (query_string, snapshot.stale_count(now))
        page = render_commitment_page(snapshot, query, request.query_params, now=now)
        snapshot.remember_page(cache_key, page)
    body, etag = page
    return cached_response(request, body=body, etag=etag, media_type="application/json")


def render_commitment_page(snapshot: CatalogSnapshot, query: CommitmentQuery, raw_params,
                           now: datetime | None = None) -> tuple[bytes, str]:
    criteria = CommitmentFilter(**query.model_dump(exclude={"limit", "offset"}), now=now)
    limit, offset = query.limit, query.offset
    matching = snapshot.query(criteria)
    page = matching[offset: offset + limit]
    next_link = None
    if offset + limit < len(matching):
        params = [(name, value) for name, value in raw_params.items() if name != "offset"]
        next_link = "/v1/commitments?" + urlencode(params + [("offset", str(offset + limit))])
    # The items are pre-rendered JSON; only the envelope is built here.
    body = b"".join((
        b'{"items":[', b",".join(view.json for view in page), b'],"total":', str(len(matching)).encode(),
        b',"limit":', str(limit).encode(), b',"offset":', str(offset).encode(), b',"next":', _json(next_link), b"}",
    ))
    stale_set = str(snapshot.stale_count(now)) if now is not None else ""
    return body, _etag(snapshot, "commitments", str(sorted(raw_params.multi_items())), stale_set)


@router.get("/commitments/{commitment_id}", response_model=CommitmentRead, summary="One commitment",
            responses={404: {"description": "No such commitment"}}, dependencies=[only_known_parameters()])
async def get_commitment(request: Request, snapshot: Catalog, commitment_id: CommitmentId) -> Response:
    view = _commitment(snapshot, commitment_id)
    etag = '"' + hashlib.sha256(view.json).hexdigest()[:32] + '"'
    return cached_response(request, body=view.json, etag=etag, media_type="application/json")


def _commitment(snapshot: CatalogSnapshot, commitment_id: str):
    view = snapshot.by_id.get(commitment_id)
    if view is None:
        raise NotFound("commitment_not_found", "No such commitment", f"There is no commitment {commitment_id!r}.")
    return view


# -- progress reports ---------------------------------------------------------------
@router.post(
    "/commitments/{commitment_id}/progress", status_code=201, response_model=ProgressReportRead,
    summary="Report progress on a commitment (coordinators, or an agency responsible for it)",
    description="Append-only: a correction is a new report that `supersedes` the one it corrects.",
    responses={
        403: {"description": "Neither a coordinator nor an agency responsible for the commitment"},
        404: {"description": "No such commitment"},
        409: {"description": "The report to supersede is already superseded; supersede its correction"},
        422: {"description": "Not a valid report: unknown status, a future or pre-plan as_of, an empty "
                             "summary, a URL that is not http(s), an unknown report to supersede"},
    },
    dependencies=[only_known_parameters()],
)
async def report_progress(request: Request, runtime: Runtime, principal: Caller, clock: Clock,
                          commitment_id: CommitmentId, body: ProgressCreate) -> Response:
    report_id, now = new_report_id(), clock()

    def work(session: Session) -> RecordedReport:
        return record_report(session, principal=principal, commitment_id=commitment_id, body=body,
                             report_id=report_id, now=now)

    recorded = await runtime.writer.run(work)
    live: LiveCatalog | None = getattr(request.app.state, "live_catalog", None)
    if live is not None:
        await live.refresh_after_write()  # read-your-writes: the next read here shows it
    return Response(recorded.report.model_dump_json(), status_code=201, media_type="application/json",
                    headers={"Location": recorded.report.links["self"]})


@router.get("/commitments/{commitment_id}/progress", response_model=ProgressPage,
            summary="A commitment's progress reports, newest first",
            responses={404: {"description": "No such commitment"}},
            dependencies=[only_known_parameters("limit", "offset")])
def list_progress(runtime: Runtime, snapshot: Catalog, commitment_id: CommitmentId, page: Page) -> ProgressPage:
    _commitment(snapshot, commitment_id)
    with read_session(runtime) as session:
        items, total = list_reports(session, commitment_id, limit=page.limit, offset=page.offset)
    following = page.offset + page.limit
    next_link = (f"/v1/commitments/{commitment_id}/progress?limit={page.limit}&offset={following}"
                 if following < total else None)
    return ProgressPage(items=items, total=total, limit=page.limit, offset=page.offset, next=next_link)


@router.get("/commitments/{commitment_id}/progress/{report_id}", response_model=ProgressReportRead,
            summary="One progress report", responses={404: {"description": "No such commitment or report"}},
            dependencies=[only_known_parameters()])
def get_progress_report(runtime: Runtime, snapshot: Catalog, commitment_id: CommitmentId,
                        report_id: ReportId) -> ProgressReportRead:
    _commitment(snapshot, commitment_id)
    with read_session(runtime) as session:
        return get_report(session, commitment_id, report_id)


@router.get("/agencies", response_model=AgencyList, summary="Agencies the plans name or imply as responsible",
            dependencies=[only_known_parameters()])
async def list_agencies(request: Request, snapshot: Catalog) -> Response:
    body = AgencyList(items=snapshot.agencies).model_dump_json().encode()
    return cached_response(request, body=body, etag=_etag(snapshot, "agencies"), media_type="application/json")
