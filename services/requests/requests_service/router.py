"""The requests API under /v1/.

Reads are plain functions (FastAPI runs them in its thread pool); writes go
through the group-commit writer, so concurrent submissions share a commit."""

import asyncio
import hashlib
from datetime import timedelta
from typing import Annotated, Literal, get_args

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, and_, col, func, not_, select

from requests_service import metrics
from requests_service.conditions import allowed_transitions
from requests_service.models import (
    IdempotencyRow,
    OfferActivationRow,
    OfferInterestRow,
    OfferRecordRow,
    OfferRow,
    RequestHistoryRow,
    RequestRow,
)
from requests_service.schemas import (
    AgreementCreate,
    ConditionRecordRead,
    EvidenceCreate,
    HistoryEntry,
    HistoryRead,
    OfferList,
    OfferRead,
    RequestCreate,
    RequestDetail,
    RequestPage,
    RequestRead,
    RequestSummary,
    TransitionCreate,
)
from requests_service.service import (
    NewRequest,
    SubmittedRequest,
    can_see,
    record_condition,
    submit_request,
    transition_request,
    visible_requests_filter,
)
from requests_service.staleness import WAITING_STATUSES, Clock
from shared.contracts.catalog import CountryCode
from shared.contracts.requests import RequestStatus
from shared.dependencies import Caller, Page, Runtime, read_session
from shared.errors import Conflict, DomainError, Invalid, NotFound
from shared.identity import Principal, require_roles
from shared.service import ServiceRuntime

router = APIRouter(prefix="/v1", tags=["requests"])
RequestId = Annotated[str, Path(max_length=36)]


async def service_clock(request: Request) -> Clock:
    return request.app.state.clock


# The service's time (an injected clock in tests): status changes start staleness periods.
ServiceClock = Annotated[Clock, Depends(service_clock)]


async def stale_after(request: Request) -> timedelta:
    return request.app.state.stale_after


# How long a waiting request may go without a status change (REQUESTS_STALE_AFTER_DAYS).
StaleAfter = Annotated[timedelta, Depends(stale_after)]
CommitmentId = Annotated[str, Path(max_length=100)]
# The orders the requests list offers (the console's columns).
RequestSort = Literal["created_at", "-created_at", "updated_at", "-updated_at", "status", "-status",
                      "country", "-country"]


def _request_read(row: "RequestRow | SubmittedRequest") -> RequestRead:
    return RequestRead(
        id=row.id, commitment_id=row.commitment_id, country=row.country, agency_id=row.agency_id, title=row.title,
        description=row.description, reference=row.reference, status=row.status, created_at=row.created_at,
        updated_at=row.updated_at,
        links={"self": f"/v1/requests/{row.id}", "history": f"/v1/requests/{row.id}/history",
               "transitions": f"/v1/requests/{row.id}/transitions", "offer": f"/v1/offers/{row.commitment_id}"},
    )


# -- requests -----------------------------------------------------------------
@router.post(
    "/requests", status_code=201, response_model=RequestRead, summary="Ask for assistance under a commitment",
    responses={
        401: {"description": "No valid API key"}, 403: {"description": "Only partner agencies submit requests"},
        409: {"description": "The same Idempotency-Key is being processed"},
        413: {"description": "Body larger than 64 KiB"},
        422: {"description": "Unknown or not requestable commitment, country not eligible, bad body, "
                             "reused Idempotency-Key"},
        429: {"description": "Rate limited"},
    },
)
async def create_request(
    runtime: Runtime,
    body: RequestCreate,
    principal: Caller,
    clock: ServiceClock,
    idempotency_key: Annotated[str | None, Header(max_length=200, description="Repeat a POST safely")] = None,
) -> Response:
    require_roles(principal, "partner")
    fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    if idempotency_key:
        replay = await asyncio.to_thread(_stored_response, runtime, principal, idempotency_key, fingerprint)
        if replay is not None:
            return replay

    def work(session: Session) -> tuple[SubmittedRequest, str]:
        row = submit_request(session, principal=principal, new=NewRequest(**body.model_dump()), now=clock())
        response_body = _request_read(row).model_dump_json()
        if idempotency_key:
            session.add(IdempotencyRow(api_key_id=principal.key_id, idempotency_key=idempotency_key,
                                       body_sha256=fingerprint, status_code=201, response_body=response_body,
                                       resource_id=row.id))
        return row, response_body

    try:
        row, response_body = await runtime.writer.run(work)
    except DomainError as error:
        metrics.REQUESTS_REFUSED.labels(error.reason).inc()
        raise
    except IntegrityError as error:
        # The same Idempotency-Key committed meanwhile by a concurrent call.
        replay = await asyncio.to_thread(_stored_response, runtime, principal, idempotency_key or "", fingerprint)
        if replay is not None:
            return replay
        raise Conflict("conflict", "Conflicting write", "Retry the request.") from error
    metrics.REQUESTS_SUBMITTED.labels(row.country).inc()
    return Response(response_body, status_code=201, media_type="application/json",
                    headers={"Location": f"/v1/requests/{row.id}"})


def _stored_response(runtime: ServiceRuntime, principal: Principal, key: str, fingerprint: str) -> Response | None:
    with read_session(runtime) as session:
        stored = session.get(IdempotencyRow, (principal.key_id, key))
    if stored is None:
        return None
    if stored.body_sha256 != fingerprint:
        metrics.REQUESTS_REFUSED.labels("idempotency_key_reused").inc()
        raise Invalid("idempotency_key_reused", "Idempotency-Key already used for another body",
                      "This Idempotency-Key was used with a different request body; use a new key.")
    return Response(stored.response_body, status_code=stored.status_code, media_type="application/json",
                    headers={"Location": f"/v1/requests/{stored.resource_id}", "Idempotent-Replayed": "true"})


def _is_stale(clock: Clock, waited_too_long: timedelta):
    """The same rule as the staleness watch (requests_service/staleness.py), as a query condition."""
    return and_(col(RequestRow.status).in_(WAITING_STATUSES), col(RequestRow.status_since) <= clock() - waited_too_long)


@router.get("/requests/summary", response_model=RequestSummary,
            summary="Counts of the requests the caller may see, by status and by country")
def summarize_requests(runtime: Runtime, principal: Caller, clock: ServiceClock,
                       waited_too_long: StaleAfter) -> RequestSummary:
    with read_session(runtime) as session:
        visible = visible_requests_filter(session, principal)
        conditions = [visible] if visible is not None else []
        by_status = dict.fromkeys(get_args(RequestStatus), 0)
        by_country: dict[str, int] = {}
        for status, country, count in session.exec(
                select(RequestRow.status, RequestRow.country, func.count()).where(*conditions)
                .group_by(col(RequestRow.status), col(RequestRow.country))).all():
            by_status[status] += count
            by_country[country] = by_country.get(country, 0) + count
        stale = session.exec(select(func.count()).select_from(RequestRow)
                             .where(*conditions, _is_stale(clock, waited_too_long))).one()
    return RequestSummary(total=sum(by_status.values()), by_status=by_status,
                          by_country=dict(sorted(by_country.items())), stale=stale)


@router.get("/requests", response_model=RequestPage, summary="Requests the caller may see")
def list_requests(
    runtime: Runtime,
    principal: Caller,
    page: Page,
    clock: ServiceClock,
    waited_too_long: StaleAfter,
    status: Annotated[RequestStatus | None, Query()] = None,
    country: Annotated[CountryCode | None, Query()] = None,
    commitment_id: Annotated[str | None, Query(max_length=100)] = None,
    stale: Annotated[bool | None, Query(
        description="Waiting on someone (submitted, under review, information requested) with no status change "
                    "for the staleness period, REQUESTS_STALE_AFTER_DAYS (or, with false, not)")] = None,
    sort: Annotated[RequestSort, Query(description="A column, `-` first for descending; ties by id")] = "-created_at",
) -> RequestPage:
    with read_session(runtime) as session:
        conditions = []
        visible = visible_requests_filter(session, principal)
        if visible is not None:
            conditions.append(visible)
        if stale is not None:
            is_stale = _is_stale(clock, waited_too_long)
            conditions.append(is_stale if stale else not_(is_stale))
        if status:
            conditions.append(col(RequestRow.status) == status)
        if country:
            conditions.append(col(RequestRow.country) == country)
        if commitment_id:
            conditions.append(col(RequestRow.commitment_id) == commitment_id)
        total = session.exec(select(func.count()).select_from(RequestRow).where(*conditions)).one()
        column = col(getattr(RequestRow, sort.lstrip("-")))
        rows = session.exec(
            select(RequestRow).where(*conditions)
            .order_by(column.desc() if sort.startswith("-") else column.asc(), col(RequestRow.id))
            .offset(page.offset).limit(page.limit)
        ).all()
    return RequestPage(items=[_request_read(row) for row in rows], total=total, limit=page.limit, offset=page.offset)


def _visible_request(session: Session, principal: Principal, request_id: str) -> RequestRow:
    row = session.get(RequestRow, request_id)
    # Another country's request is "not found", not "forbidden": its existence is not told.
    if row is None or not can_see(session, principal, row):
        raise NotFound("request_not_found", "No such request", f"There is no request {request_id!r}.")
    return row


@router.get("/requests/{request_id}", response_model=RequestDetail,
            summary="One request, with the transitions the caller may make now",
            responses={404: {"description": "No such request, or not visible to the caller"}})
def get_request(runtime: Runtime, principal: Caller, request_id: RequestId) -> RequestDetail:
    with read_session(runtime) as session:
        row = _visible_request(session, principal, request_id)
    is_requesting_agency = principal.role == "partner" and principal.agency_id == row.agency_id
    allowed = allowed_transitions(row.status, role=principal.role, is_requesting_agency=is_requesting_agency)
    return RequestDetail(**_request_read(row).model_dump(), allowed_transitions=list(allowed))


@router.get("/requests/{request_id}/history", response_model=HistoryRead, summary="Every change of a request",
            responses={404: {"description": "No such request, or not visible to the caller"}})
def get_request_history(runtime: Runtime, principal: Caller, request_id: RequestId) -> HistoryRead:
    with read_session(runtime) as session:
        _visible_request(session, principal, request_id)
        rows = session.exec(select(RequestHistoryRow).where(RequestHistoryRow.request_id == request_id)
                            .order_by(col(RequestHistoryRow.id))).all()
    return HistoryRead(request_id=request_id, items=[
        HistoryEntry(at=row.at, actor_role=row.actor_role, actor_key_id=row.actor_key_id,
                     actor_agency_id=row.actor_agency_id, from_status=row.from_status, to_status=row.to_status,
                     note=row.note)
        for row in rows
    ])


@router.post("/requests/{request_id}/transitions", response_model=RequestRead,
             summary="Move a request in its lifecycle",
             responses={403: {"description": "The caller may not change this request, or its role never makes "
                                           "this transition"}, 404: {"description": "No such request"},
                        409: {"description": "Transition not allowed; the allowed ones are listed"},
                        422: {"description": "A decline needs a note"}})
async def create_transition(runtime: Runtime, principal: Caller, clock: ServiceClock, request_id: RequestId,
                            body: TransitionCreate) -> RequestRead:
    def work(session: Session) -> RequestRow:
        return transition_request(session, principal=principal, request_id=request_id, to_status=body.to,
                                  note=body.note, now=clock())

    return _request_read(await runtime.writer.run(work))


# -- offers -------------------------------------------------------------------
def _offer_read(session: Session, offer: OfferRow) -> OfferRead:
    activations = session.exec(select(OfferActivationRow)
                               .where(OfferActivationRow.commitment_id == offer.commitment_id)).all()
    interests = set(session.exec(select(OfferInterestRow.country)
                                 .where(OfferInterestRow.commitment_id == offer.commitment_id)).all())
    records = session.exec(select(OfferRecordRow).where(OfferRecordRow.commitment_id == offer.commitment_id)
                           .order_by(col(OfferRecordRow.recorded_at))).all()
    activated = {row.country for row in activations}
    recorded_parties = {party for record in records for party in record.parties}
    concerned = offer.eligible_countries if offer.condition_type == "on_request" else offer.required_countries
    countries = {}
    for country in concerned:
        if country in activated:
            countries[country] = "activated"
        elif country in interests or country in recorded_parties:
            countries[country] = "requested"
        else:
            countries[country] = "dormant"
    return OfferRead(
        commitment_id=offer.commitment_id, plan_id=offer.plan_id, section=offer.section, text=offer.text,
        condition_type=offer.condition_type, condition_text=offer.condition_text, activated=bool(activations),
        activated_at=min((row.activated_at for row in activations), default=None), countries=countries,
        records=[ConditionRecordRead(id=r.id, commitment_id=r.commitment_id, kind=r.kind, reference=r.reference,
                                     parties=r.parties, note=r.note, recorded_at=r.recorded_at) for r in records],
    )


@router.get("/offers", response_model=OfferList, summary="The offer board: every conditional offer and its state")
def list_offers(runtime: Runtime, principal: Caller) -> OfferList:
    with read_session(runtime) as session:
        offers = session.exec(select(OfferRow)
                              .where(OfferRow.condition_type != "none", col(OfferRow.removed).is_(False))
                              .order_by(col(OfferRow.commitment_id))).all()
        return OfferList(items=[_offer_read(session, offer) for offer in offers])


@router.get("/offers/{commitment_id}", response_model=OfferRead, summary="One conditional offer",
            responses={404: {"description": "No such conditional offer"}})
def get_offer(runtime: Runtime, principal: Caller, commitment_id: CommitmentId) -> OfferRead:
    with read_session(runtime) as session:
        offer = session.get(OfferRow, commitment_id)
        if offer is None or offer.removed or offer.condition_type == "none":
            raise NotFound("offer_not_found", "No such offer", f"There is no conditional offer {commitment_id!r}.")
        return _offer_read(session, offer)


async def _record(runtime: ServiceRuntime, principal: Principal, commitment_id: str, kind: str, reference: str,
                  parties: list[str], note: str | None) -> ConditionRecordRead:
    require_roles(principal, "coordinator")

    def work(session: Session) -> OfferRecordRow:
        return record_condition(session, principal=principal, commitment_id=commitment_id, kind=kind,
                                reference=reference, parties=parties, note=note)

    record = await runtime.writer.run(work)
    return ConditionRecordRead(id=record.id, commitment_id=record.commitment_id, kind=record.kind,
                               reference=record.reference, parties=record.parties, note=record.note,
                               recorded_at=record.recorded_at)


@router.post("/offers/{commitment_id}/agreements", status_code=201, response_model=ConditionRecordRead,
             summary="Record a regional agreement (coordinators)",
             responses={403: {"description": "Coordinators only"}, 404: {"description": "No such offer"},
                        409: {"description": "The offer's condition is not a regional agreement"},
                        422: {"description": "A party is not among the countries the condition concerns "
                                             "(not_a_party), or not an ISO 3166-1 alpha-2 code"}})
async def create_agreement(runtime: Runtime, principal: Caller, commitment_id: CommitmentId,
                           body: AgreementCreate) -> ConditionRecordRead:
    return await _record(runtime, principal, commitment_id, "agreement", body.reference, list(body.parties), body.note)


@router.post("/offers/{commitment_id}/evidence", status_code=201, response_model=ConditionRecordRead,
             summary="Record evidence that meets the offer's condition (coordinators)",
             responses={403: {"description": "Coordinators only"}, 404: {"description": "No such offer"},
                        409: {"description": "The offer's condition is not evidence"}})
async def create_evidence(runtime: Runtime, principal: Caller, commitment_id: CommitmentId,
                          body: EvidenceCreate) -> ConditionRecordRead:
    return await _record(runtime, principal, commitment_id, "evidence", body.reference, [], body.note)
