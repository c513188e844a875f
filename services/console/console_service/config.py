from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class ConsoleSettings(ServiceSettings):
    """The console keeps no database: `database_url` and the outbox settings it
    inherits are unused. It reads `identity.keys` to check sign-in keys."""

    model_config = SettingsConfigDict(env_prefix="CONSOLE_", extra="ignore")

    service_name: str = "console"
    port: int = 8004
    # The public APIs the pages call, with the signed-in user's own key.
    catalog_url: str = "http://127.0.0.1:8001"
    requests_url: str = "http://127.0.0.1:8002"
    notifications_url: str = "http://127.0.0.1:8003"
    api_timeout_seconds: float = Field(default=10.0, gt=0)
    # A session ends this long after sign-in, whatever happens meanwhile.
    session_lifetime_seconds: float = Field(default=8 * 3600.0, gt=0)
    # How often open sessions are checked against the keys (revocations).
    session_sweep_seconds: float = Field(default=1.0, gt=0)
    # Cookies get `Secure` when the request came over https; set this behind a
    # TLS-terminating proxy that forwards plain http.
    force_secure_cookies: bool = False
