"""Settings shared by every service; each service subclasses with its own env prefix."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT / "var"


class ServiceSettings(BaseSettings):
    """Base settings. A subclass sets `env_prefix` (e.g. `CATALOG_`) and defaults."""

    model_config = SettingsConfigDict(extra="ignore", env_file=None)

    service_name: str = "service"
    host: str = "127.0.0.1"
    port: int = 8000

    # A SQLite file by default; any SQLAlchemy URL (postgresql+psycopg://...) otherwise.
    database_url: str | None = None
    # FULL makes every acknowledged commit survive power loss; NORMAL is faster
    # but may drop the last commits on an OS crash. Acknowledged means durable here.
    sqlite_synchronous: str = Field(default="FULL", pattern="^(FULL|NORMAL|EXTRA)$")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_client_id: str | None = None
    # 1 for the single local broker; 3 on a cluster.
    kafka_replication_factor: int = 1
    # Fallback poll for rows written by other processes; commits in this
    # process wake the relay at once.
    outbox_poll_interval_seconds: float = 1.0
    outbox_batch_size: int = 500
    # A row the broker refuses this many times (too large, invalid) is set
    # aside so the rows behind it go out; outages are retried without limit.
    outbox_max_attempts: int = Field(default=10, ge=1)
    consumer_max_attempts: int = 3
    # Concurrent writes are committed together, up to this many per commit.
    group_commit_max_batch: int = 128
    readiness_timeout_seconds: float = 2.0
    # API limits (OWASP API4): request bodies, and requests per key.
    max_body_bytes: int = 64 * 1024
    rate_limit_per_second: float = 20.0
    rate_limit_burst: int = 40
    log_level: str = "INFO"
    log_json: bool = True

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        DEFAULT_DATA_DIR.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{DEFAULT_DATA_DIR / (self.service_name + '.sqlite3')}"

    @property
    def client_id(self) -> str:
        return self.kafka_client_id or f"caj-{self.service_name}"
