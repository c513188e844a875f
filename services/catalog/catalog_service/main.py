"""App factory: `uvicorn --factory catalog_service.main:app`."""

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from fastapi import FastAPI

from catalog_service import metrics
from catalog_service.activations import ACTIVATIONS_GROUP, handle_requests_event
from catalog_service.config import CatalogSettings
from catalog_service.live import LiveCatalog
from catalog_service.plan_files import PlanFileError, load_plan_file
from catalog_service.reviews import ReviewReportCache, load_dialogue_meetings
from catalog_service.reviews_router import router as reviews_router
from catalog_service.router import router
from catalog_service.snapshot import CatalogSnapshot, load_snapshot
from catalog_service.staleness import StaleCommitmentsWatch
from catalog_service.sync import sync_plans
from shared.retry import Backoff
from shared.service import CheckResult, ServiceRuntime, create_service_app
from shared.topics import CATALOG_COMMITMENTS, CATALOG_DLQ, CATALOG_PROGRESS

log = logging.getLogger(__name__)


def create_app(settings: CatalogSettings | None = None, *, clock: Callable[[], datetime] | None = None) -> FastAPI:
    """`clock`: where the service reads the time (reports' stamps, staleness);
    by default the settings' (the machine's, unless offset)."""
    settings = settings or CatalogSettings()
    clock = clock or settings.clock()
    stale_after = timedelta(days=settings.stale_after_days)
    state: dict[str, str | None] = {"error": "loading plan files"}

    def catalog_loaded() -> CheckResult:
        return CheckResult(state["error"] is None, state["error"] or "")

    runtime = ServiceRuntime(
        settings=settings,
        migrations_package="catalog_service",
        topics=(CATALOG_COMMITMENTS, CATALOG_PROGRESS),
        # Groups and topics as shared/contracts/registry.py lists them.
        handlers={ACTIVATIONS_GROUP: handle_requests_event},
        dead_letter_topic=CATALOG_DLQ,
        extra_checks={"catalog": catalog_loaded},
    )

    def serve(app: FastAPI) -> Callable[[CatalogSnapshot], None]:
        def on_new(snapshot: CatalogSnapshot) -> None:
            metrics.record_snapshot(snapshot)
            app.state.catalog = snapshot

        return on_new

    live = LiveCatalog(runtime.read_engine, interval=settings.snapshot_refresh_seconds)
    stale_watch = StaleCommitmentsWatch(writer=runtime.writer, read_engine=runtime.read_engine, clock=clock,
                                        stale_after=stale_after, interval=settings.stale_check_seconds)

    async def load_catalog(app: FastAPI) -> None:
        """Sync the plan files into the database (publishing what changed),
        then serve the snapshot. Retries while the database is not ready."""
        try:
            # In a thread: reading and checking the plan files must not hold up the event loop.
            plans = await asyncio.to_thread(lambda: [load_plan_file(path) for path in settings.plan_files])
        except PlanFileError as error:
            state["error"] = f"plan file refused: {error}"
            log.error("%s", state["error"])
            return
        backoff = Backoff(first=0.5, cap=10.0)
        while True:
            try:
                report = await asyncio.to_thread(sync_plans, runtime.engine, plans, clock)
                # The Dialogue's meetings since the plan, as its review meetings (once: by stable ids).
                await asyncio.to_thread(load_dialogue_meetings, runtime.engine, clock())
                snapshot = await asyncio.to_thread(load_snapshot, runtime.engine, stale_after=stale_after)
                break
            except Exception as error:
                state["error"] = f"catalog not loaded yet: {type(error).__name__}"
                delay = backoff.next_delay()
                log.warning("catalog sync failed; retrying in %.1fs", delay, exc_info=True)
                await asyncio.sleep(delay)
        for change in ("created", "updated", "republished", "removed"):
            metrics.SYNC_PUBLISHED.labels(change).set(len(getattr(report, change)))
        live.on_new = serve(app)
        live.serve(snapshot)
        live.worker.start()
        runtime.supervise(live.worker)  # /readyz names it while it is down
        stale_watch.start()
        runtime.supervise(stale_watch.worker)
        state["error"] = None

    async def stop_refreshing(app: FastAPI) -> None:
        await live.worker.stop()
        await stale_watch.stop()

    app = create_service_app(
        runtime,
        title="caj-tracker catalog",
        description="Every commitment of the 'Central Asia plus Japan' Action Plan, with its evidence and the "
                    "progress reported on it.",
        routers=[router, reviews_router],
        on_startup=load_catalog,
        on_shutdown=stop_refreshing,
    )
    app.state.clock = clock
    app.state.live_catalog = live
    app.state.review_reports = ReviewReportCache()
    app.state.stale_commitments = stale_watch
    return app


def app() -> FastAPI:
    """Factory for `uvicorn --factory catalog_service.main:app`."""
    return create_app()
