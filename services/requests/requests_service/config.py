from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class RequestsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REQUESTS_", extra="ignore")

    service_name: str = "requests"
    port: int = 8002
    # A request waiting on someone (submitted, under review, info requested)
    # is stale once its status has not changed for this many days; it is
    # announced once per such period.
    stale_after_days: int = Field(default=30, ge=1)
    # How often each replica looks for requests that became stale.
    stale_check_seconds: float = Field(default=300.0, gt=0)
