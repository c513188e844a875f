"""App factory: `uvicorn catalog_service.main:app` or `create_app(settings)`."""

from fastapi import FastAPI

from catalog_service.config import CatalogSettings
from shared.service import ServiceRuntime, create_service_app
from shared.topics import CATALOG_COMMITMENTS


def create_app(settings: CatalogSettings | None = None) -> FastAPI:
    runtime = ServiceRuntime(
        settings=settings or CatalogSettings(),
        migrations_package="catalog_service",
        topics=(CATALOG_COMMITMENTS,),
    )
    return create_service_app(
        runtime,
        title="caj-tracker catalog",
        description="Every commitment of the 'Central Asia plus Japan' Action Plan, with its evidence.",
    )


def app() -> FastAPI:
    """Factory for `uvicorn --factory catalog_service.main:app`."""
    return create_app()
