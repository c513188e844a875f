from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

# After each failed attempt, how long until the next one: about 28 hours in
# all, like the schedules of the big webhook senders (5 s, 5 min, 30 min, 2 h,
# 5 h, 10 h, 10 h). Tests use seconds.
PRODUCTION_RETRY_SCHEDULE = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]


class NotificationsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFICATIONS_", extra="ignore")

    service_name: str = "notifications"
    port: int = 8003

    # -- webhooks ----------------------------------------------------------------
    webhook_retry_schedule_seconds: list[float] = Field(default_factory=lambda: list(PRODUCTION_RETRY_SCHEDULE))
    # Each delay is multiplied by a random factor in [1 - jitter, 1 + jitter],
    # so endpoints that failed together are not retried together.
    webhook_retry_jitter: float = Field(default=0.2, ge=0, le=1)
    # A receiver's Retry-After is honoured up to this long.
    webhook_retry_after_max_seconds: float = Field(default=86400.0, gt=0)
    # An attempt that has not answered by then has failed.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    # A claimed delivery is leased for two timeouts (one waiting for a send
    # slot, one sending) plus this margin. If the service dies mid-attempt,
    # the delivery is sent again, with the same webhook-id, once it runs out.
    webhook_lease_margin_seconds: float = Field(default=30.0, gt=0)
    # After a rotation the old secret still signs (a second signature) this long.
    webhook_secret_grace_seconds: float = Field(default=86400.0, ge=0)
    # Private, loopback and link-local addresses are refused unless this is on
    # (development and tests, where receivers run on 127.0.0.1).
    webhook_allow_private_addresses: bool = False
    delivery_concurrency: int = Field(default=64, ge=1, le=1024)
    # An endpoint whose latest attempt failed or took more than half the
    # timeout gets at most this many attempts at once (until one is quick
    # and succeeds), so a broken receiver cannot hold every send slot. Per
    # replica: each one judges receivers alone, so N replicas may have up to
    # N x this many attempts at once on one struggling endpoint.
    delivery_concurrency_struggling_endpoint: int = Field(default=4, ge=1, le=1024)
    delivery_batch_size: int = Field(default=500, ge=1, le=5000)
    # With nothing due, how often to look again (new work also wakes it).
    delivery_poll_interval_seconds: float = Field(default=1.0, gt=0)

    @field_validator("webhook_retry_schedule_seconds")
    @classmethod
    def _non_negative(cls, schedule: list[float]) -> list[float]:
        if any(delay < 0 for delay in schedule):
            raise ValueError("retry delays cannot be negative")
        return schedule
