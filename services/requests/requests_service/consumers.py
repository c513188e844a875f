"""Handlers for the events the requests service consumes."""

from cloudevents.core.v1.event import CloudEvent
from sqlmodel import Session


def handle_catalog_event(session: Session, event: CloudEvent) -> str:
    # The offers read model is built from catalog.commitments in a later
    # change; until then each event is acknowledged as seen and ignored.
    return "ignored"
