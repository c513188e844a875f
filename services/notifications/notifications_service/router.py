"""The notifications API under /v1/: what each agency was told, and its inbox."""

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from sqlmodel import Session, col, func, select

from notifications_service.models import COORDINATORS, DeliveryRow, NotificationRow
from notifications_service.states import DeliveryState
from shared.dependencies import MAX_PAGE_SIZE, Caller, Page, Runtime, read_session
from shared.errors import Forbidden, NotFound
from shared.identity import Principal
from shared.messaging_models import UtcDatetime, utcnow

router = APIRouter(prefix="/v1", tags=["notifications"])


class DeliverySummary(BaseModel):
    """The webhook delivery of a notification, when its agency has a webhook."""

    id: str
    state: DeliveryState
    attempts: int
    next_attempt_at: UtcDatetime | None
    last_status_code: int | None
    last_error: str | None


class NotificationRead(BaseModel):
    id: str
    event_id: str
    event_type: str
    subject: str | None
    recipient: str
    payload: dict
    event_time: UtcDatetime
    created_at: UtcDatetime
    acknowledged_at: UtcDatetime | None
    delivery: DeliverySummary | None = Field(None, description="Null: inbox only (no webhook when it was created)")


class NotificationPage(BaseModel):
    items: list[NotificationRead]
    total: int
    limit: int
    offset: int


def _recipient_of(principal: Principal) -> str | None:
    """Whose notifications a caller reads: its agency's, or the coordinators'."""
    if principal.role == "partner":
        return principal.agency_id
    if principal.role == "coordinator":
        return COORDINATORS
    return None  # operators read all, own no inbox


def _read(row: NotificationRow, delivery: DeliveryRow | None = None) -> NotificationRead:
    read = NotificationRead.model_validate(row, from_attributes=True)
    if delivery is not None:
        read = read.model_copy(update={"delivery": DeliverySummary.model_validate(delivery, from_attributes=True)})
    return read


def _with_deliveries(session: Session, rows) -> list[NotificationRead]:
    ids = [row.id for row in rows]
    deliveries = {d.notification_id: d for d in session.exec(
        select(DeliveryRow).where(col(DeliveryRow.notification_id).in_(ids)))} if ids else {}
    return [_read(row, deliveries.get(row.id)) for row in rows]


@router.get("/notifications", response_model=NotificationPage,
            summary="Notifications: an agency sees its own, coordinators and operators all")
def list_notifications(
    runtime: Runtime,
    principal: Caller,
    page: Page,
    event_type: Annotated[str | None, Query(max_length=200)] = None,
    recipient: Annotated[str | None, Query(max_length=64)] = None,
    subject: Annotated[str | None, Query(
        max_length=200, description="What the event is about: a request's id for request events, "
                                    "a commitment's id for offer and progress events")] = None,
) -> NotificationPage:
    conditions = []
    if principal.role == "partner":
        conditions.append(col(NotificationRow.recipient) == principal.agency_id)
    elif recipient:
        conditions.append(col(NotificationRow.recipient) == recipient)
    if event_type:
        conditions.append(col(NotificationRow.event_type) == event_type)
    if subject:
        conditions.append(col(NotificationRow.subject) == subject)
    with read_session(runtime) as session:
        total = session.exec(select(func.count()).select_from(NotificationRow).where(*conditions)).one()
        rows = session.exec(select(NotificationRow).where(*conditions)
                            .order_by(col(NotificationRow.created_at), col(NotificationRow.id))
                            .offset(page.offset).limit(page.limit)).all()
        items = _with_deliveries(session, rows)
    return NotificationPage(items=items, total=total, limit=page.limit, offset=page.offset)


@router.get("/inbox", response_model=NotificationPage, summary="The caller's unacknowledged notifications",
            responses={403: {"description": "Operators have no inbox"}})
def inbox(
    runtime: Runtime,
    principal: Caller,
    # The inbox has no offset: acknowledging is how it moves on.
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
) -> NotificationPage:
    owner = _recipient_of(principal)
    if owner is None:
        raise Forbidden("forbidden", "No inbox for this role", "Operators read /v1/notifications.")
    conditions = [col(NotificationRow.recipient) == owner, col(NotificationRow.acknowledged_at).is_(None)]
    with read_session(runtime) as session:
        total = session.exec(select(func.count()).select_from(NotificationRow).where(*conditions)).one()
        rows = session.exec(select(NotificationRow).where(*conditions)
                            .order_by(col(NotificationRow.created_at), col(NotificationRow.id)).limit(limit)).all()
        items = _with_deliveries(session, rows)
    return NotificationPage(items=items, total=total, limit=limit, offset=0)


@router.post("/inbox/{notification_id}/ack", response_model=NotificationRead,
             summary="Acknowledge a notification (again is harmless)",
             responses={404: {"description": "No such notification in the caller's inbox"}})
async def acknowledge(runtime: Runtime, principal: Caller,
                      notification_id: Annotated[str, Path(max_length=36)]) -> NotificationRead:
    owner = _recipient_of(principal)

    def work(session: Session) -> NotificationRow:
        row = session.get(NotificationRow, notification_id)
        if row is None or owner is None or row.recipient != owner:
            raise NotFound("notification_not_found", "No such notification",
                           f"There is no notification {notification_id!r} in your inbox.")
        if row.acknowledged_at is None:
            row.acknowledged_at = utcnow()
            session.add(row)
        return row

    return _read(await runtime.writer.run(work))
