"""Webhook endpoints (per agency) and deliveries under /v1/."""

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from notifications_service.config import NotificationsSettings
from notifications_service.models import DeliveryAttemptRow, DeliveryRow, NotificationRow, WebhookEndpointRow
from notifications_service.routing import load_rules
from notifications_service.states import AttemptOutcome, DeliveryState
from notifications_service.webhooks import WEBHOOK_TEST, AddressGuard, UnsafeWebhookUrl, new_secret
from shared.contracts.notifications import NOTIFICATIONS_SOURCE
from shared.dependencies import Caller, Page, Runtime, read_session, service_settings
from shared.errors import Conflict, Forbidden, Invalid, NotFound
from shared.identity import Principal, require_roles
from shared.messaging_models import UtcDatetime, as_utc, utcnow

router = APIRouter(prefix="/v1", tags=["webhooks"])


# -- dependencies -----------------------------------------------------------------
async def address_guard(request: Request) -> AddressGuard:
    return request.app.state.address_guard


async def dispatcher_wake(request: Request) -> Callable[[], None]:
    """Wakes the webhook dispatcher; nothing to wake before it has started."""
    dispatcher = getattr(request.app.state, "dispatcher", None)
    return dispatcher.wake if dispatcher is not None else lambda: None


Guard = Annotated[AddressGuard, Depends(address_guard)]
WakeDispatcher = Annotated[Callable[[], None], Depends(dispatcher_wake)]
Settings = Annotated[NotificationsSettings, Depends(service_settings)]

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
    outcome: AttemptOutcome
    status_code: int | None
    error: str | None
    duration_ms: float
    attempted_at: UtcDatetime


class DeliveryRead(BaseModel):
    id: str = Field(description="The webhook-id header of every attempt")
    notification_id: str
    agency_id: str
    event_type: str
    state: DeliveryState
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


def _the_agency_itself(principal: Principal, agency_id: str) -> None:
    if principal.role != "partner" or principal.agency_id != agency_id:
        raise Forbidden("forbidden", "Only the agency itself",
                        f"Only a key of agency {agency_id!r} manages its webhook.")


def _no_webhook(agency_id: str) -> NotFound:
    return NotFound("webhook_not_found", "No webhook", f"Agency {agency_id!r} has no webhook endpoint.")


# -- endpoints ------------------------------------------------------------------------
@router.put("/agencies/{agency_id}/webhook", response_model=WebhookRead, status_code=200,
            summary="Register or change the agency's webhook (the agency itself)",
            responses={201: {"model": WebhookRead, "description": "Created; the answer carries the secret, once"},
                       403: {"description": "Not a key of this agency"},
                       422: {"description": "Bad URL (scheme, not public, unresolvable) or unknown event type"}})
async def put_webhook(runtime: Runtime, guard: Guard, response: Response, principal: Caller, agency_id: AgencyId,
                      config: WebhookConfig) -> WebhookRead:
    _the_agency_itself(principal, agency_id)
    try:
        await guard.check(config.url)
    except UnsafeWebhookUrl as error:
        raise Invalid(error.reason, "Webhook URL refused", error.detail) from error

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
        row, secret = await runtime.writer.run(work)
    except IntegrityError as error:  # created at the same moment by another replica
        raise Conflict("conflict", "Conflicting write", "Retry the request.") from error
    if secret is not None:
        response.status_code = 201
    return _webhook_read(row, secret=secret)


@router.get("/agencies/{agency_id}/webhook", response_model=WebhookRead,
            summary="The agency's webhook (the agency, coordinators, operators); never the secret")
def get_webhook(runtime: Runtime, principal: Caller, agency_id: AgencyId) -> WebhookRead:
    if principal.role == "partner":
        _the_agency_itself(principal, agency_id)
    with read_session(runtime) as session:
        row = session.get(WebhookEndpointRow, agency_id)
    if row is None:
        raise _no_webhook(agency_id)
    return _webhook_read(row)


@router.delete("/agencies/{agency_id}/webhook", status_code=204,
               summary="Remove the agency's webhook; notifications then wait in its inbox")
async def delete_webhook(runtime: Runtime, principal: Caller, agency_id: AgencyId) -> Response:
    _the_agency_itself(principal, agency_id)

    def work(session: Session) -> bool:
        row = session.get(WebhookEndpointRow, agency_id)
        if row is not None:
            session.delete(row)
        return row is not None

    if not await runtime.writer.run(work):
        raise _no_webhook(agency_id)
    return Response(status_code=204)


@router.post("/agencies/{agency_id}/webhook/rotate-secret", response_model=WebhookRead,
             summary="A new signing secret (shown once); the old one still signs for a grace period")
async def rotate_secret(runtime: Runtime, settings: Settings, principal: Caller, agency_id: AgencyId) -> WebhookRead:
    _the_agency_itself(principal, agency_id)
    grace = timedelta(seconds=settings.webhook_secret_grace_seconds)

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

    row, secret = await runtime.writer.run(work)
    return _webhook_read(row, secret=secret)


@router.post("/agencies/{agency_id}/webhook/test", response_model=DeliveryRead, status_code=202,
             summary="Send a test event to the agency's webhook (the agency itself)",
             description="A delivery like any other (signed, retried, in the delivery log) of a "
                         f"`{WEBHOOK_TEST}` event. Its notification is acknowledged at once: a test "
                         "is not work waiting in the inbox.",
             responses={403: {"description": "Not a key of this agency"},
                        404: {"description": "The agency has no webhook"},
                        409: {"description": "The agency's webhook is disabled"}})
async def send_test_event(runtime: Runtime, wake_dispatcher: WakeDispatcher, principal: Caller,
                          agency_id: AgencyId) -> DeliveryRead:
    _the_agency_itself(principal, agency_id)

    def work(session: Session) -> DeliveryRow:
        endpoint = session.get(WebhookEndpointRow, agency_id)
        if endpoint is None:
            raise _no_webhook(agency_id)
        if not endpoint.enabled:
            raise Conflict("webhook_disabled", "The agency's webhook is disabled",
                           "Register the webhook again (PUT .../webhook) to enable it.",
                           disabled_reason=endpoint.disabled_reason)
        now, event_id = utcnow(), str(uuid.uuid4())
        notification = NotificationRow(
            id=str(uuid.uuid4()), event_source=NOTIFICATIONS_SOURCE, event_id=event_id, event_type=WEBHOOK_TEST,
            subject=agency_id, recipient=agency_id, event_time=now, created_at=now, acknowledged_at=now,
            payload={"agency_id": agency_id, "message": "A test event sent from the webhook settings."},
        )
        delivery = DeliveryRow(id=f"msg_{uuid.uuid4().hex}", notification_id=notification.id, agency_id=agency_id,
                               event_type=WEBHOOK_TEST, state=DeliveryState.PENDING, next_attempt_at=now,
                               created_at=now)
        session.add(notification)
        session.flush()  # the notification first: the delivery refers to it
        session.add(delivery)
        session.flush()
        return delivery

    row = await runtime.writer.run(work)
    wake_dispatcher()
    return _delivery_read(row)


# -- deliveries ---------------------------------------------------------------------------
@router.get("/deliveries", response_model=DeliveryPage,
            summary="Webhook deliveries: an agency sees its own, coordinators and operators all")
def list_deliveries(
    runtime: Runtime,
    principal: Caller,
    page: Page,
    state: Annotated[DeliveryState | None, Query()] = None,
    agency_id: Annotated[str | None, Query(max_length=64)] = None,
) -> DeliveryPage:
    conditions = []
    if principal.role == "partner":
        conditions.append(col(DeliveryRow.agency_id) == principal.agency_id)
    elif agency_id:
        conditions.append(col(DeliveryRow.agency_id) == agency_id)
    if state:
        conditions.append(col(DeliveryRow.state) == state)
    with read_session(runtime) as session:
        total = session.exec(select(func.count()).select_from(DeliveryRow).where(*conditions)).one()
        rows = session.exec(select(DeliveryRow).where(*conditions)
                            .order_by(col(DeliveryRow.created_at), col(DeliveryRow.id))
                            .offset(page.offset).limit(page.limit)).all()
    return DeliveryPage(items=[_delivery_read(row) for row in rows], total=total, limit=page.limit,
                        offset=page.offset)


def _visible_delivery(session: Session, principal: Principal, delivery_id: str) -> DeliveryRow:
    row = session.get(DeliveryRow, delivery_id)
    if row is None or (principal.role == "partner" and row.agency_id != principal.agency_id):
        raise NotFound("delivery_not_found", "No such delivery", f"There is no delivery {delivery_id!r}.")
    return row


@router.get("/deliveries/{delivery_id}", response_model=DeliveryRead, summary="One delivery with every attempt")
def get_delivery(runtime: Runtime, principal: Caller,
                 delivery_id: Annotated[str, Path(max_length=40)]) -> DeliveryRead:
    with read_session(runtime) as session:
        row = _visible_delivery(session, principal, delivery_id)
        history = session.exec(select(DeliveryAttemptRow).where(DeliveryAttemptRow.delivery_id == delivery_id)
                               .order_by(col(DeliveryAttemptRow.attempt))).all()
    return _delivery_read(row, list(history))


@router.post("/deliveries/{delivery_id}/retry", response_model=DeliveryRead,
             summary="Send a dead delivery again, on a fresh schedule (coordinators and operators)",
             responses={409: {"description": "Not dead, or the agency's endpoint is disabled or gone"}})
async def retry_delivery(runtime: Runtime, wake_dispatcher: WakeDispatcher, principal: Caller,
                         delivery_id: Annotated[str, Path(max_length=40)]) -> DeliveryRead:
    require_roles(principal, "coordinator", "operator")

    def work(session: Session) -> DeliveryRow:
        row = _visible_delivery(session, principal, delivery_id)
        if row.state != DeliveryState.DEAD:
            raise Conflict("delivery_not_dead", "Only dead deliveries are retried by hand",
                           f"Delivery {delivery_id} is {row.state}.")
        endpoint = session.get(WebhookEndpointRow, row.agency_id)
        if endpoint is None or not endpoint.enabled:
            raise Conflict("webhook_disabled", "The agency's webhook is gone or disabled",
                           "The agency must register its webhook again (PUT .../webhook) first.",
                           disabled_reason=endpoint.disabled_reason if endpoint else None)
        row.state, row.schedule_step, row.next_attempt_at = DeliveryState.PENDING, 0, utcnow()
        row.dead_at, row.lease_until = None, None
        session.add(row)
        session.flush()
        return row

    row = await runtime.writer.run(work)
    wake_dispatcher()
    return _delivery_read(row)
