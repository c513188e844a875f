"""Handlers for the events the notifications service consumes."""

from cloudevents.core.v1.event import CloudEvent
from sqlmodel import Session


def handle_event(session: Session, event: CloudEvent) -> str:
    # Routing and delivery come in a later change; events are acknowledged
    # as seen and ignored until then.
    return "ignored"
