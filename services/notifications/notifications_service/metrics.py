from prometheus_client import Counter, Gauge, Histogram
from sqlmodel import Session, col, func, select

from notifications_service.models import DeliveryRow, WebhookEndpointRow
from notifications_service.states import AttemptOutcome, DeliveryState

NOTIFICATIONS_CREATED = Counter(
    "caj_notifications_created_total", "Notifications created (one per event and recipient)", ["event_type"]
)
DELIVERIES = Counter(
    "caj_notifications_deliveries_total",
    f"Webhook delivery attempts by outcome ({', '.join(AttemptOutcome)})",
    ["outcome"],
)
DELIVERY_LATENCY = Histogram(
    "caj_notifications_delivery_latency_seconds", "From the event's time to the receiver's 2xx",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 4 * 3600, 12 * 3600, 30 * 3600),
)
DEAD = Counter("caj_notifications_dead_total", "Notifications whose delivery died (schedule exhausted or 410)")
DELIVERIES_BY_STATE = Gauge(
    "caj_notifications_deliveries_by_state", "Webhook deliveries by state (pending is the retry queue)", ["state"]
)
RETRY_QUEUE = Gauge(
    "caj_notifications_retry_queue_depth", "Deliveries waiting for a retry (pending after at least one failure)"
)

WEBHOOK_ENDPOINTS = Gauge(
    "caj_notifications_webhook_endpoints",
    "Registered webhook endpoints, enabled or disabled (a 410 disables one until it is registered again)",
    ["state"],
)


def refresh(session: Session) -> None:
    """Scrape-time gauges: the database is the truth, whichever replica wrote it."""
    by_state = dict(session.exec(select(DeliveryRow.state, func.count()).group_by(DeliveryRow.state)).all())
    for state in DeliveryState:
        DELIVERIES_BY_STATE.labels(state).set(by_state.get(state, 0))
    RETRY_QUEUE.set(session.exec(
        select(func.count()).select_from(DeliveryRow)
        .where(DeliveryRow.state == DeliveryState.PENDING, DeliveryRow.schedule_step > 0)
    ).one())
    by_enabled = dict(session.exec(
        select(col(WebhookEndpointRow.enabled), func.count()).group_by(col(WebhookEndpointRow.enabled))
    ).all())
    WEBHOOK_ENDPOINTS.labels("enabled").set(by_enabled.get(True, 0))
    WEBHOOK_ENDPOINTS.labels("disabled").set(by_enabled.get(False, 0))
