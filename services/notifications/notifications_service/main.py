"""App factory: `uvicorn --factory notifications_service.main:app`."""

from fastapi import FastAPI

from notifications_service.config import NotificationsSettings
from notifications_service.consumers import make_handler
from notifications_service.router import router
from notifications_service.routing import load_rules
from shared.service import ConsumerSpec, ServiceRuntime, create_service_app
from shared.topics import (
    CATALOG_COMMITMENTS,
    NOTIFICATIONS_DEAD_LETTER,
    NOTIFICATIONS_DELIVERIES,
    NOTIFICATIONS_DLQ,
    REQUESTS_EVENTS,
)


def create_app(settings: NotificationsSettings | None = None) -> FastAPI:
    holder: dict[str, ServiceRuntime] = {}

    def identity_agencies(country: str) -> list[str]:
        store = holder["runtime"].key_store
        if store is None:
            return []
        return [agency.agency_id for agency in list(store.agencies.values()) if agency.country == country]

    runtime = ServiceRuntime(
        settings=settings or NotificationsSettings(),
        migrations_package="notifications_service",
        topics=(NOTIFICATIONS_DELIVERIES, NOTIFICATIONS_DEAD_LETTER),
        consumer_specs=(
            ConsumerSpec(
                group_id="notifications.router",
                topics=(REQUESTS_EVENTS, CATALOG_COMMITMENTS),
                handler=make_handler(load_rules(), identity_agencies),
            ),
        ),
        dead_letter_topic=NOTIFICATIONS_DLQ,
        identity=True,
    )
    holder["runtime"] = runtime
    return create_service_app(
        runtime,
        title="caj-tracker notifications",
        description="Alerts to the agencies that must act, by webhook or inbox.",
        routers=[router],
    )


def app() -> FastAPI:
    return create_app()
