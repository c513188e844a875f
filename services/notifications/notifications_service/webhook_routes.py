"""Webhook endpoints (per agency) and deliveries under /v1/."""

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from notifications_service.models import DeliveryAttemptRow, DeliveryRow, WebhookEndpointRow
from notifications_service.router import Caller, read_session
from notifications_service.routing import load_rules
from notifications_service.webhooks import UnsafeWebhookUrl, new_secret
from shared.identity import Principal, require_roles
from shared.messaging_models import UtcDatetime, as_utc, utcnow
from shared.problems import ProblemError

router = APIRouter(prefix="/v1", tags=["webhooks"])

AgencyId = Annotated[str, Path(max_length=64, pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
ROUTED_EVENT_TYPES = sorted(load_rules().rules)


# -- models ------------------------------------------------------------------------
class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(max_length=2000, description="http(s) URL that receives the agency's notifications")
    event_types: list[str] = Field(default_factory=list, max_length=20,
                                   description="Receive only these event types; empty receives all")

    @field_validator("event_types")
    @classmethod
    def _routed(cls, event_types: list[str]) -> list[str]:
        unknown = sorted(set(event_types) - set(ROUTED_EVENT_TYPES))
        if unknown:
            raise ValueError(f"not event types routed to agencies: {', '.join(unknown)}; "
                             f"known: {', '.join(ROUTED_EVENT_TYPES)}")
        return list(dict.fromkeys(event_types))


class WebhookRead(BaseModel):
    agency_id: str
    url: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None
    previous_secrets_expire_at: list[UtcDatetime] = Field(
        default_factory=list, description="When each secret replaced by a rotation stops signing")
    created_at: UtcDatetime
    updated_at: UtcDatetime
    secret: str | None = Field(None, description="The signing secret: only in the answer that creates it")


class AttemptRead(BaseModel):
    attempt: int
    outcome: str
    status_code: int | None
    error: str | None
    duration_ms: float
    attempted_at: UtcDatetime


class DeliveryRead(BaseModel):
    id: str = Field(description="The webhook-id header of every attempt")
    notification_id: str
    agency_id: str
    event_type: str
    state: Literal["pending", "delivered", "dead"]
    attempts: int
    next_attempt_at: UtcDatetime | None
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: UtcDatetime | None
    delivered_at: UtcDatetime | None
    dead_at: UtcDatetime | None
    created_at: UtcDatetime
    history: list[AttemptRead] | None = Field(None, description="Every attempt (on the single-delivery route)")


class DeliveryPage(BaseModel):
    items: list[DeliveryRead]
    total: int
    limit: int
    offset: int


def _webhook_read(row: WebhookEndpointRow, *, secret: str | None = None) -> WebhookRead:
    expiries = [datetime.fromisoformat(previous["expires_at"]) for previous in row.previous_secrets]
    return WebhookRead.model_validate(row, from_attributes=True).model_copy(
        update={"secret": secret, "previous_secrets_expire_at": expiries})


def _delivery_read(row: DeliveryRow, history: list[DeliveryAttemptRow] | None = None) -> DeliveryRead:
    read = DeliveryRead.model_validate(row, from_attributes=True)
    if history is not None:
        read = read.model_copy(update={"history": [AttemptRead.model_validate(a, from_attributes=True)
                                                   for a in history]})
    return read


def _runtime(request: Request):
    return request.app.state.runtime


def _the_agency_itself(principal: Principal, agency_id: str) -> None:
    if principal.role != "partner" or principal.agency_id != agency_id:
        raise ProblemError(403, "forbidden", "Only the agency itself",
                           f"Only a key of agency {agency_id!r} manages its webhook.")


def _no_webhook(agency_id: str) -> ProblemError:
    return ProblemError(404, "webhook_not_found", "No webhook", f"Agency {agency_id!r} has no webhook endpoint.")


# -- endpoints ------------------------------------------------------------------------
@router.put("/agencies/{agency_id}/webhook", response_model=WebhookRead, status_code=200,
            summary="Register or change the agency's webhook (the agency itself)",
            responses={201: {"model": WebhookRead, "description": "Created; the answer carries the secret, once"},
                       403: {"description": "Not a key of this agency"},
                       422: {"description": "Bad URL (scheme, not public, unresolvable) or unknown event type"}})
async def put_webhook(request: Request, response: Response, principal: Caller, agency_id: AgencyId,
                      config: WebhookConfig) -> WebhookRead:
    _the_agency_itself(principal, agency_id)
    try:
        await request.app.state.address_guard.check(config.url)
    except UnsafeWebhookUrl as error:
        raise ProblemError(422, error.reason, "Webhook URL refused", error.detail) from error

    def work(session: Session) -> tuple[WebhookEndpointRow, str | None]:
        row, now = session.get(WebhookEndpointRow, agency_id), utcnow()
        secret = None
        if row is None:
            secret = new_secret()
            row = WebhookEndpointRow(agency_id=agency_id, url=config.url, event_types=config.event_types,
                                     secret=secret, created_at=now, updated_at=now)
        else:
            # A change re-enables an endpoint disabled by a 410.
            row.url, row.event_types, row.enabled, row.disabled_reason = config.url, config.event_types, True, None
            row.updated_at = now
        session.add(row)
        session.flush()
        return row, secret

    try:
        row, secret = await _runtime(request).writer.run(work)
    except IntegrityError as error:  # created at the same moment by another replica
        raise ProblemError(409, "conflict", "Conflicting write", "Retry the request.") from error
    if secret is not None:
        response.status_code = 201
    return _webhook_read(row, secret=secret)


@router.get("/agencies/{agency_id}/webhook", response_model=WebhookRead,
            summary="The agency's webhook (the agency, coordinators, operators); never the secret")
def get_webhook(request: Request, principal: Caller, agency_id: AgencyId) -> WebhookRead:
    if principal.role == "partner":
        _the_agency_itself(principal, agency_id)
    with read_session(request) as session:
        row = session.get(WebhookEndpointRow, agency_id)
    if row is None:
        raise _no_webhook(agency_id)
    return _webhook_read(row)


@router.delete("/agencies/{agency_id}/webhook", status_code=204,
               summary="Remove the agency's webhook; notifications then wait in its inbox")
async def delete_webhook(request: Request, principal: Caller, agency_id: AgencyId) -> Response:
    _the_agency_itself(principal, agency_id)

    def work(session: Session) -> bool:
        row = session.get(WebhookEndpointRow, agency_id)
        if row is not None:
            session.delete(row)
        return row is not None

    if not await _runtime(request).writer.run(work):
        raise _no_webhook(agency_id)
    return Response(status_code=204)


@router.post("/agencies/{agency_id}/webhook/rotate-secret", response_model=WebhookRead,
             summary="A new signing secret (shown once); the old one still signs for a grace period")
async def rotate_secret(request: Request, principal: Caller, agency_id: AgencyId) -> WebhookRead:
    _the_agency_itself(principal, agency_id)
    grace = timedelta(seconds=request.app.state.settings.webhook_secret_grace_seconds)

    def work(session: Session) -> tuple[WebhookEndpointRow, str]:
        row = session.get(WebhookEndpointRow, agency_id)
        if row is None:
            raise _no_webhook(agency_id)
        now, secret = utcnow(), new_secret()
        # Every secret still in its grace period keeps signing: a receiver may
        # not have caught up with the last rotation yet. At most five.
        still_valid = [previous for previous in row.previous_secrets
                       if as_utc(datetime.fromisoformat(previous["expires_at"])) > now]
        row.previous_secrets = [{"secret": row.secret, "expires_at": (now + grace).isoformat()}, *still_valid][:5]
        row.secret, row.updated_at = secret, now
        session.add(row)
        session.flush()
        return row, secret

    row, secret = await _runtime(request).writer.run(work)
    return _webhook_read(row, secret=secret)


# -- deliveries ---------------------------------------------------------------------------
@router.get("/deliveries", response_model=DeliveryPage,
            summary="Webhook deliveries: an agency sees its own, coordinators and operators all")
def list_deliveries(
    request: Request,
    principal: Caller,
    state: Annotated[Literal["pending", "delivered", "dead"] | None, Query()] = None,
    agency_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> DeliveryPage:
    conditions = []
    if principal.role == "partner":
        conditions.append(col(DeliveryRow.agency_id) == principal.agency_id)
    elif agency_id:
        conditions.append(col(DeliveryRow.agency_id) == agency_id)
    if state:
        conditions.append(col(DeliveryRow.state) == state)
    with read_session(request) as session:
        total = session.exec(select(func.count()).select_from(DeliveryRow).where(*conditions)).one()
        rows = session.exec(select(DeliveryRow).where(*conditions)
                            .order_by(col(DeliveryRow.created_at), col(DeliveryRow.id))
                            .offset(offset).limit(limit)).all()
    return DeliveryPage(items=[_delivery_read(row) for row in rows], total=total, limit=limit, offset=offset)


def _visible_delivery(session: Session, principal: Principal, delivery_id: str) -> DeliveryRow:
    row = session.get(DeliveryRow, delivery_id)
    if row is None or (principal.role == "partner" and row.agency_id != principal.agency_id):
        raise ProblemError(404, "delivery_not_found", "No such delivery", f"There is no delivery {delivery_id!r}.")
    return row


@router.get("/deliveries/{delivery_id}", response_model=DeliveryRead, summary="One delivery with every attempt")
def get_delivery(request: Request, principal: Caller,
                 delivery_id: Annotated[str, Path(max_length=40)]) -> DeliveryRead:
    with read_session(request) as session:
        row = _visible_delivery(session, principal, delivery_id)
        history = session.exec(select(DeliveryAttemptRow).where(DeliveryAttemptRow.delivery_id == delivery_id)
                               .order_by(col(DeliveryAttemptRow.attempt))).all()
    return _delivery_read(row, list(history))


@router.post("/deliveries/{delivery_id}/retry", response_model=DeliveryRead,
             summary="Send a dead delivery again, on a fresh schedule (coordinators and operators)",
             responses={409: {"description": "Not dead, or the agency's endpoint is disabled or gone"}})
async def retry_delivery(request: Request, principal: Caller,
                         delivery_id: Annotated[str, Path(max_length=40)]) -> DeliveryRead:
    require_roles(principal, "coordinator", "operator")

    def work(session: Session) -> DeliveryRow:
        row = _visible_delivery(session, principal, delivery_id)
        if row.state != "dead":
            raise ProblemError(409, "delivery_not_dead", "Only dead deliveries are retried by hand",
                               f"Delivery {delivery_id} is {row.state}.")
        endpoint = session.get(WebhookEndpointRow, row.agency_id)
        if endpoint is None or not endpoint.enabled:
            raise ProblemError(409, "webhook_disabled", "The agency's webhook is gone or disabled",
                               "The agency must register its webhook again (PUT .../webhook) first.",
                               disabled_reason=endpoint.disabled_reason if endpoint else None)
        row.state, row.schedule_step, row.next_attempt_at = "pending", 0, utcnow()
        row.dead_at, row.lease_until = None, None
        session.add(row)
        session.flush()
        return row

    row = await _runtime(request).writer.run(work)
    if (dispatcher := getattr(request.app.state, "dispatcher", None)) is not None:
        dispatcher.wake()
    return _delivery_read(row)
