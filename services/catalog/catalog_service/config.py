from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from catalog_service.plan_files import DEFAULT_PLAN_FILES
from shared.messaging_models import utcnow
from shared.settings import ServiceSettings


class CatalogSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CATALOG_", extra="ignore")

    service_name: str = "catalog"
    port: int = 8001
    # Plan files to serve (JSON list in the environment). A commitment that
    # leaves every file is removed and tombstoned on the next start.
    plan_files: list[Path] = list(DEFAULT_PLAN_FILES)
    # A commitment in implementation with nothing reported for this long is stale.
    stale_after_days: int = Field(default=180, ge=1)
    # How often each replica looks for commitments that became stale.
    stale_check_seconds: float = Field(default=300.0, gt=0)
    # How often a replica looks for reports other replicas took (see live.py).
    snapshot_refresh_seconds: float = Field(default=2.0, gt=0)
    # For tests and rehearsals only: the service's clock runs this many days
    # ahead of (or behind) the machine's. Zero in production.
    clock_offset_days: float = 0.0

    def clock(self) -> Callable[[], datetime]:
        """The time reports are stamped with and staleness is judged at."""
        offset = timedelta(days=self.clock_offset_days)
        if not offset:
            return utcnow
        return lambda: utcnow() + offset
