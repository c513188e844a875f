"""Every topic the system uses, declared in code and created at start.

Broker auto-creation is off: a topic created by accident gets the broker's
defaults (one partition, delete policy), which would silently break compaction
and per-key ordering.
"""

import asyncio
import logging
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.retry import Backoff

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    description: str = ""

    @property
    def compacted(self) -> bool:
        return self.config.get("cleanup.policy") == "compact"


# Tombstones stay 30 days (the broker's default is one day), so a consumer
# that was down for longer than a day still learns of a removal.
_COMPACTED = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000",
              "delete.retention.ms": str(30 * 24 * 3600 * 1000)}

CATALOG_COMMITMENTS = TopicSpec(
    "catalog.commitments",
    partitions=3,
    config=_COMPACTED,
    description="Full current state of every commitment, key = commitment id; tombstone on removal.",
)
REQUESTS_EVENTS = TopicSpec(
    "requests.events",
    partitions=6,
    config={"cleanup.policy": "delete", "retention.ms": str(30 * 24 * 3600 * 1000)},
    description="Request lifecycle and offer activation events; key = request id or commitment id.",
)
CATALOG_PROGRESS = TopicSpec(
    "catalog.progress",
    partitions=3,
    # Reports are the history itself: kept as long as the broker keeps anything.
    config={"cleanup.policy": "delete", "retention.ms": "-1"},
    description="Progress reports and staleness of commitments, key = commitment id.",
)
NOTIFICATIONS_DELIVERIES = TopicSpec(
    "notifications.deliveries",
    partitions=3,
    config={"cleanup.policy": "delete", "retention.ms": str(14 * 24 * 3600 * 1000)},
    description="Outcome of every webhook delivery attempt.",
)
NOTIFICATIONS_DEAD_LETTER = TopicSpec(
    "notifications.dead-letter",
    partitions=1,
    config={"cleanup.policy": "delete", "retention.ms": str(90 * 24 * 3600 * 1000)},
    description="Notifications whose retry schedule is exhausted.",
)


IDENTITY_KEYS = TopicSpec(
    "identity.keys",
    # One partition: every service reads it whole, in the order it was written.
    partitions=1,
    config=_COMPACTED,
    description="API keys (hashed) and registered agencies, written by the caj CLI; compacted.",
)


def consumer_dead_letter_topic(service: str) -> TopicSpec:
    """Where a service's consumer puts messages it cannot process."""
    return TopicSpec(
        f"{service}.dlq",
        partitions=1,
        config={"cleanup.policy": "delete", "retention.ms": str(90 * 24 * 3600 * 1000)},
        description=f"Messages the {service} consumer could not process, with the reason in headers.",
    )


REQUESTS_DLQ = consumer_dead_letter_topic("requests")
NOTIFICATIONS_DLQ = consumer_dead_letter_topic("notifications")
CATALOG_DLQ = consumer_dead_letter_topic("catalog")

ALL_TOPICS: tuple[TopicSpec, ...] = (
    CATALOG_COMMITMENTS,
    CATALOG_PROGRESS,
    IDENTITY_KEYS,
    REQUESTS_EVENTS,
    NOTIFICATIONS_DELIVERIES,
    NOTIFICATIONS_DEAD_LETTER,
    REQUESTS_DLQ,
    NOTIFICATIONS_DLQ,
    CATALOG_DLQ,
)


class TopicCreationError(RuntimeError):
    pass


async def ensure_topics(
    bootstrap_servers: str,
    topics: tuple[TopicSpec, ...] | list[TopicSpec],
    *,
    retry_for: float = 60.0,
    replication_factor: int = 1,
) -> None:
    """Create the topics that do not exist yet; retry while the broker starts.

    `retry_for` bounds the retrying, not an attempt: once it has passed, the
    next failure is raised as it is.

    `replication_factor` is 1 for the single local broker; a cluster wants 3
    (with min.insync.replicas 2), or -1 for the broker's default."""
    deadline = asyncio.get_running_loop().time() + retry_for
    backoff = Backoff(first=0.5, cap=5.0)
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=10000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [spec for spec in topics if spec.name not in existing]
            if missing:
                response = await admin.create_topics(
                    [
                        NewTopic(
                            name=spec.name,
                            num_partitions=spec.partitions,
                            replication_factor=replication_factor,
                            topic_configs=spec.config,
                        )
                        for spec in missing
                    ]
                )
                # The admin client reports per-topic errors in the response, not by raising.
                failed = [
                    f"{entry[0]}: error {entry[1]} {entry[2] if len(entry) > 2 and entry[2] else ''}".strip()
                    for entry in response.topic_errors
                    if entry[1] not in (0, TopicAlreadyExistsError.errno)
                ]
                if failed:
                    raise TopicCreationError("; ".join(failed))
                log.info("created topics", extra={"topics": [spec.name for spec in missing]})
            return
        except TopicCreationError:
            raise  # a refused configuration does not get better by retrying
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            delay = backoff.next_delay()
            log.warning("topic creation failed; retrying in %.1fs", delay, exc_info=True)
            await asyncio.sleep(delay)
        finally:
            await admin.close()
