from prometheus_client import Counter

NOTIFICATIONS_CREATED = Counter(
    "caj_notifications_created_total", "Notifications created (one per event and recipient)", ["event_type"]
)
