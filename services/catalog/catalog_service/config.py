from pathlib import Path

from pydantic_settings import SettingsConfigDict

from catalog_service.plan_files import DEFAULT_PLAN_FILES
from shared.settings import ServiceSettings


class CatalogSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CATALOG_", extra="ignore")

    service_name: str = "catalog"
    port: int = 8001
    # Plan files to serve (JSON list in the environment). A commitment that
    # leaves every file is removed and tombstoned on the next start.
    plan_files: list[Path] = list(DEFAULT_PLAN_FILES)
