"""App factory: `uvicorn --factory notifications_service.main:app`."""

from fastapi import FastAPI

from notifications_service import metrics
from notifications_service.config import NotificationsSettings
from notifications_service.consumers import make_handler
from notifications_service.delivery import Dispatcher
from notifications_service.router import router
from notifications_service.routing import load_rules
from notifications_service.webhook_routes import router as webhook_router
from notifications_service.webhooks import AddressGuard
from shared.service import CheckResult, ConsumerSpec, ServiceRuntime, create_service_app
from shared.topics import (
    CATALOG_COMMITMENTS,
    NOTIFICATIONS_DEAD_LETTER,
    NOTIFICATIONS_DELIVERIES,
    NOTIFICATIONS_DLQ,
    REQUESTS_EVENTS,
)


def create_app(settings: NotificationsSettings | None = None) -> FastAPI:
    settings = settings or NotificationsSettings()
    holder: dict = {}

    def identity_agencies(country: str) -> list[str]:
        store = holder["runtime"].key_store
        if store is None:
            return []
        return [agency.agency_id for agency in list(store.agencies.values()) if agency.country == country]

    def wake_dispatcher() -> None:
        if "dispatcher" in holder:
            holder["dispatcher"].wake()

    def dispatcher_check() -> CheckResult:
        dispatcher = holder.get("dispatcher")
        if dispatcher is None or not dispatcher.running:
            return CheckResult(False, "the webhook dispatcher is not running")
        return CheckResult(True, "running")

    runtime = ServiceRuntime(
        settings=settings,
        migrations_package="notifications_service",
        topics=(NOTIFICATIONS_DELIVERIES, NOTIFICATIONS_DEAD_LETTER),
        consumer_specs=(
            ConsumerSpec(
                group_id="notifications.router",
                topics=(REQUESTS_EVENTS, CATALOG_COMMITMENTS),
                handler=make_handler(load_rules(), identity_agencies, wake_dispatcher),
            ),
        ),
        dead_letter_topic=NOTIFICATIONS_DLQ,
        identity=True,
        metric_refreshers=(metrics.refresh,),
        extra_checks={"webhook_dispatcher": dispatcher_check},
    )
    holder["runtime"] = runtime

    async def start_dispatcher(app: FastAPI) -> None:
        dispatcher = Dispatcher(engine=runtime.engine, read_engine=runtime.read_engine, writer=runtime.writer,
                                settings=settings)
        app.state.dispatcher = holder["dispatcher"] = dispatcher
        dispatcher.start()

    async def stop_dispatcher(app: FastAPI) -> None:
        if "dispatcher" in holder:
            await holder["dispatcher"].stop()

    app = create_service_app(
        runtime,
        title="caj-tracker notifications",
        description="Alerts to the agencies that must act, by signed webhook (Standard Webhooks) or inbox.",
        routers=[router, webhook_router],
        on_startup=start_dispatcher,
        on_shutdown=stop_dispatcher,
    )
    app.state.settings = settings
    app.state.address_guard = AddressGuard(allow_private=settings.webhook_allow_private_addresses)
    return app


def app() -> FastAPI:
    return create_app()
