"""App factory: `uvicorn --factory requests_service.main:app`."""

from datetime import timedelta

from fastapi import FastAPI
from sqlmodel import Session

from requests_service import metrics
from requests_service.config import RequestsSettings
from requests_service.consumers import handle_catalog_event
from requests_service.router import router
from requests_service.staleness import Clock, StaleRequestsWatch
from shared.messaging_models import utcnow
from shared.service import ServiceRuntime, create_service_app
from shared.topics import REQUESTS_DLQ, REQUESTS_EVENTS


def create_app(settings: RequestsSettings | None = None, *, clock: Clock = utcnow) -> FastAPI:
    """`clock`: the service's time (status changes, staleness, the stale
    gauge); tests pass a clock they move forward."""
    settings = settings or RequestsSettings()
    stale_after = timedelta(days=settings.stale_after_days)

    def refresh_stale(session: Session) -> None:
        metrics.refresh_stale(session, now=clock(), stale_after=stale_after)

    runtime = ServiceRuntime(
        settings=settings,
        migrations_package="requests_service",
        topics=(REQUESTS_EVENTS,),
        # Groups and topics as shared/contracts/registry.py lists them.
        handlers={"requests.offers": handle_catalog_event},
        dead_letter_topic=REQUESTS_DLQ,
        metric_refreshers=(metrics.refresh, refresh_stale),
    )

    async def start_stale_watch(app: FastAPI) -> None:
        watch = StaleRequestsWatch(writer=runtime.writer, read_engine=runtime.read_engine, clock=clock,
                                   stale_after=stale_after, interval=settings.stale_check_seconds)
        app.state.stale_requests = watch
        watch.start()
        runtime.supervise(watch.worker)  # /readyz names it while it is down

    async def stop_stale_watch(app: FastAPI) -> None:
        watch = getattr(app.state, "stale_requests", None)
        if watch is not None:
            await watch.stop()

    app = create_service_app(
        runtime,
        title="caj-tracker requests",
        description="Assistance requests from Central Asian partner agencies, and the offers they activate.",
        routers=[router],
        on_startup=start_stale_watch,
        on_shutdown=stop_stale_watch,
    )
    app.state.clock = clock
    app.state.stale_after = stale_after
    return app


def app() -> FastAPI:
    return create_app()
