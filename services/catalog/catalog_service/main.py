"""App factory: `uvicorn --factory catalog_service.main:app`."""

import asyncio
import logging

from fastapi import FastAPI

from catalog_service import metrics
from catalog_service.config import CatalogSettings
from catalog_service.plan_files import PlanFileError, load_plan_file
from catalog_service.router import router
from catalog_service.snapshot import load_snapshot
from catalog_service.sync import sync_plans
from shared.retry import Backoff
from shared.service import CheckResult, ServiceRuntime, create_service_app
from shared.topics import CATALOG_COMMITMENTS

log = logging.getLogger(__name__)


def create_app(settings: CatalogSettings | None = None) -> FastAPI:
    settings = settings or CatalogSettings()
    state: dict[str, str | None] = {"error": "loading plan files"}

    def catalog_loaded() -> CheckResult:
        return CheckResult(state["error"] is None, state["error"] or "")

    runtime = ServiceRuntime(
        settings=settings,
        migrations_package="catalog_service",
        topics=(CATALOG_COMMITMENTS,),
        extra_checks={"catalog": catalog_loaded},
    )

    async def load_catalog(app: FastAPI) -> None:
        """Sync the plan files into the database (publishing what changed),
        then serve the snapshot. Retries while the database is not ready."""
        try:
            plans = [load_plan_file(path) for path in settings.plan_files]
        except PlanFileError as error:
            state["error"] = f"plan file refused: {error}"
            log.error("%s", state["error"])
            return
        backoff = Backoff(first=0.5, cap=10.0)
        while True:
            try:
                report = await asyncio.to_thread(sync_plans, runtime.engine, plans)
                snapshot = await asyncio.to_thread(load_snapshot, runtime.engine)
                break
            except Exception as error:
                state["error"] = f"catalog not loaded yet: {type(error).__name__}"
                delay = backoff.next_delay()
                log.warning("catalog sync failed; retrying in %.1fs", delay, exc_info=True)
                await asyncio.sleep(delay)
        for change in ("created", "updated", "removed"):
            metrics.SYNC_PUBLISHED.labels(change).set(len(getattr(report, change)))
        metrics.record_snapshot(snapshot)
        app.state.catalog = snapshot
        state["error"] = None

    return create_service_app(
        runtime,
        title="caj-tracker catalog",
        description="Every commitment of the 'Central Asia plus Japan' Action Plan, with its evidence.",
        routers=[router],
        on_startup=load_catalog,
    )


def app() -> FastAPI:
    """Factory for `uvicorn --factory catalog_service.main:app`."""
    return create_app()
