from prometheus_client import Gauge

from catalog_service.snapshot import CatalogSnapshot

COMMITMENTS = Gauge(
    "caj_catalog_commitments", "Commitments in the catalog", ["pillar", "condition_type"]
)
SYNC_PUBLISHED = Gauge(
    "caj_catalog_last_sync_changes", "Commitments published by the last sync, by change", ["change"]
)


def record_snapshot(snapshot: CatalogSnapshot) -> None:
    COMMITMENTS.clear()
    for (pillar, condition_type), count in snapshot.by_pillar_and_condition.items():
        COMMITMENTS.labels(str(pillar), condition_type).set(count)
