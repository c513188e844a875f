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
from shared.service import ServiceRuntime, create_service_app
from shared.topics import NOTIFICATIONS_DEAD_LETTER, NOTIFICATIONS_DELIVERIES, NOTIFICATIONS_DLQ


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

    runtime = ServiceRuntime(
        settings=settings,
        migrations_package="notifications_service",
        topics=(NOTIFICATIONS_DELIVERIES, NOTIFICATIONS_DEAD_LETTER),
        # Groups and topics as shared/contracts/registry.py lists them.
        handlers={"notifications.router": make_handler(load_rules(), identity_agencies, wake_dispatcher,
                                                       hand_off=lambda: holder.get("dispatcher"))},
        dead_letter_topic=NOTIFICATIONS_DLQ,
        metric_refreshers=(metrics.refresh,),
    )
    holder["runtime"] = runtime

    async def start_dispatcher(app: FastAPI) -> None:
        dispatcher = Dispatcher(engine=runtime.engine, read_engine=runtime.read_engine, writer=runtime.writer,
                                settings=settings)
        app.state.dispatcher = holder["dispatcher"] = dispatcher
        dispatcher.start()
        runtime.supervise(dispatcher.worker)  # /readyz names it while it is down

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
    app.state.address_guard = AddressGuard(allow_private=settings.webhook_allow_private_addresses)
    return app


def app() -> FastAPI:
    return create_app()
