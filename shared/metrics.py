"""Prometheus metrics shared by the services (prefix `caj_`).

Labels are bounded: route templates, never raw paths; topics and groups,
never ids. Histograms, not summaries, so replicas can be aggregated.
"""

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

HTTP_REQUESTS = Counter(
    "caj_http_requests_total", "HTTP requests handled", ["service", "method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "caj_http_request_duration_seconds",
    "HTTP request duration",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HTTP_IN_FLIGHT = Gauge("caj_http_requests_in_flight", "HTTP requests being handled", ["service"])

KAFKA_PRODUCED = Counter("caj_kafka_messages_produced_total", "Records produced", ["topic", "outcome"])
KAFKA_CONSUMED = Counter(
    "caj_kafka_messages_consumed_total",
    "Records consumed, by outcome (processed, duplicate, ignored, dead_lettered)",
    ["topic", "group", "outcome"],
)
KAFKA_CONSUMER_LAG = Gauge(
    "caj_kafka_consumer_lag", "Records between the consumer position and the high watermark",
    ["topic", "partition", "group"],
)
KAFKA_DEAD_LETTERS = Counter(
    "caj_kafka_dead_letters_total", "Records sent to a dead-letter topic", ["topic", "group", "reason"]
)
OUTBOX_BACKLOG = Gauge("caj_outbox_backlog", "Outbox rows not yet published", ["service"])
OUTBOX_OLDEST_AGE = Gauge(
    "caj_outbox_oldest_unpublished_age_seconds", "Age of the oldest unpublished outbox row", ["service"]
)
OUTBOX_SET_ASIDE = Counter(
    "caj_outbox_set_aside_total", "Outbox rows the broker kept refusing, set aside unpublished", ["topic"]
)
OUTBOX_SET_ASIDE_ROWS = Gauge(
    "caj_outbox_set_aside_rows", "Outbox rows set aside and not yet put back (caj outbox failed)", ["service"]
)

# Set when /metrics is scraped, so an alert can name what is down right now.
WORKER_UP = Gauge(
    "caj_worker_up", "1 while a background worker's loop runs, 0 while it is down or restarting",
    ["service", "worker"],
)
KAFKA_BROKER_REACHABLE = Gauge(
    "caj_kafka_broker_reachable", "1 when the broker answered a metadata request (as /readyz checks it)", ["service"]
)

# Where an event's way to its receiver spends its time, one hand-off per
# `hop` (a fixed set): a request's 201, then each hop, then the webhook.
HOP_OUTBOX_PUBLISH = "outbox_publish"  # staged in the outbox -> acknowledged by Kafka
HOP_CONSUME = "consume"  # produced (the record's timestamp) -> its effects committed by a consumer
HOP_DELIVERY_CLAIM = "delivery_claim"  # a delivery due -> claimed by a dispatcher
HOP_WEBHOOK_SEND = "webhook_send"  # claimed -> the receiver's answer
EVENT_HOP_LATENCY = Histogram(
    "caj_event_hop_latency_seconds",
    "Time an event spends in each hand-off on its way to a receiver "
    "(outbox_publish, consume, delivery_claim, webhook_send)",
    ["hop"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)

WORKER_RESTARTS = Counter(
    "caj_worker_restarts_total",
    "Background workers (relay, consumers, writer, key store, dispatcher) restarted after an unexpected exit",
    ["worker"],
)


def metrics_response(_request: Request | None = None) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
