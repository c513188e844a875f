"""The read model of requests.events the catalog keeps: per commitment, the
requests made under it (submitted, and each status change) and the offer's
activations, with when. Review reports read it, and the staleness check
(an activated offer with nothing reported goes stale too).

Idempotent through the shared inbox: the consumer records each event id in
the transaction that adds its row, so a replay adds nothing."""

from typing import Any, TypeVar

from cloudevents.core.v1.event import CloudEvent
from pydantic import BaseModel, ValidationError
from sqlalchemy import insert
from sqlmodel import Session

from catalog_service.models import CommitmentActivityRow
from shared.consumer import PoisonMessage
from shared.contracts.requests import (
    OFFER_ACTIVATED,
    REQUEST_STATUS_CHANGED,
    REQUEST_SUBMITTED,
    OfferActivated,
    RequestStatusChanged,
    RequestSubmitted,
)
from shared.db import table_of

ACTIVATIONS_GROUP = "catalog.activations"
_ACTIVITY = table_of(CommitmentActivityRow)
Model = TypeVar("Model", bound=BaseModel)


def _parse(model: type[Model], event: CloudEvent) -> Model:
    try:
        return model.model_validate(event.get_data())
    except ValidationError as error:
        raise PoisonMessage(f"not a valid {event.get_type()}: {error.error_count()} errors") from error


def activity_of(event: CloudEvent) -> dict[str, Any] | None:
    """The row an event adds (its column values), or None for the events the
    model does not keep."""
    kind = event.get_type()
    if kind == REQUEST_SUBMITTED:
        submitted = _parse(RequestSubmitted, event)
        return {"commitment_id": submitted.commitment_id, "kind": "request_submitted",
                "request_id": submitted.request_id, "status": "submitted", "countries": [submitted.country],
                "occurred_at": submitted.submitted_at}
    if kind == REQUEST_STATUS_CHANGED:
        changed = _parse(RequestStatusChanged, event)
        return {"commitment_id": changed.commitment_id, "kind": "request_status_changed",
                "request_id": changed.request_id, "status": changed.to_status, "countries": [changed.country],
                "occurred_at": changed.changed_at}
    if kind == OFFER_ACTIVATED:
        activated = _parse(OfferActivated, event)
        return {"commitment_id": activated.commitment_id, "kind": "offer_activated", "request_id": None,
                "status": None, "countries": list(activated.countries), "occurred_at": activated.activated_at}
    return None


class ActivityRecorder:
    """The consumer's handler. A run of events is added with one INSERT
    (`handle_many`): this runs for every request, so no ORM objects."""

    def __call__(self, session: Session, event: CloudEvent) -> str:
        return self.handle_many(session, [event])[0]

    def handle_many(self, session: Session, events: list[CloudEvent]) -> list[str]:
        rows = [activity_of(event) for event in events]
        added = [row for row in rows if row is not None]
        if added:
            session.connection().execute(insert(_ACTIVITY), added)
        # Interest registered, stale requests, types not known yet: ignored.
        return ["processed" if row is not None else "ignored" for row in rows]


handle_requests_event = ActivityRecorder()
