"""App factory: `uvicorn --factory notifications_service.main:app`."""

from fastapi import FastAPI

from notifications_service.config import NotificationsSettings
from notifications_service.consumers import handle_event
from shared.service import ConsumerSpec, ServiceRuntime, create_service_app
from shared.topics import (
    CATALOG_COMMITMENTS,
    NOTIFICATIONS_DEAD_LETTER,
    NOTIFICATIONS_DELIVERIES,
    NOTIFICATIONS_DLQ,
    REQUESTS_EVENTS,
)


def create_app(settings: NotificationsSettings | None = None) -> FastAPI:
    runtime = ServiceRuntime(
        settings=settings or NotificationsSettings(),
        migrations_package="notifications_service",
        topics=(NOTIFICATIONS_DELIVERIES, NOTIFICATIONS_DEAD_LETTER),
        consumer_specs=(
            ConsumerSpec(
                group_id="notifications.router",
                topics=(REQUESTS_EVENTS, CATALOG_COMMITMENTS),
                handler=handle_event,
            ),
        ),
        dead_letter_topic=NOTIFICATIONS_DLQ,
    )
    return create_service_app(
        runtime,
        title="caj-tracker notifications",
        description="Alerts to the agencies that must act, by webhook or inbox.",
    )


def app() -> FastAPI:
    return create_app()
