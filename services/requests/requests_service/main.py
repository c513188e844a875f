"""App factory: `uvicorn --factory requests_service.main:app`."""

from fastapi import FastAPI

from requests_service import metrics
from requests_service.config import RequestsSettings
from requests_service.consumers import handle_catalog_event
from requests_service.router import router
from shared.service import ServiceRuntime, create_service_app
from shared.topics import REQUESTS_DLQ, REQUESTS_EVENTS


def create_app(settings: RequestsSettings | None = None) -> FastAPI:
    runtime = ServiceRuntime(
        settings=settings or RequestsSettings(),
        migrations_package="requests_service",
        topics=(REQUESTS_EVENTS,),
        # Groups and topics as shared/contracts/registry.py lists them.
        handlers={"requests.offers": handle_catalog_event},
        dead_letter_topic=REQUESTS_DLQ,
        metric_refreshers=(metrics.refresh,),
    )
    return create_service_app(
        runtime,
        title="caj-tracker requests",
        description="Assistance requests from Central Asian partner agencies, and the offers they activate.",
        routers=[router],
    )


def app() -> FastAPI:
    return create_app()
