"""The catalog publishes each commitment's state to the compacted topic
`catalog.commitments` (key = id): on start what is new or changed and nothing
else, and a tombstone for a removed commitment."""

import asyncio
import json
import time
from pathlib import Path

from catalog_service.plan_files import DEFAULT_PLAN_FILES
from shared.contracts.catalog import COMMITMENT_PUBLISHED, COMMITMENT_REMOVED, CommitmentPublished
from shared.events import from_kafka
from tests.kafka_helpers import read_topic
from tests.service_process import ServiceProcess

SYNTHETIC = Path(__file__).parent / "fixtures" / "synthetic-plan-2030.yaml"
TOPIC = "catalog.commitments"


def run_catalog(broker, tmp_path, plan_files, run: int) -> None:
    """Start the catalog on the same database, wait until it is ready and its
    outbox is empty, then stop it."""
    service = ServiceProcess(
        "catalog_service",
        database_url=f"sqlite:///{tmp_path / 'catalog.sqlite3'}",
        kafka_bootstrap=broker.bootstrap_servers,
        log_path=tmp_path / f"catalog-{run}.log",
        plan_files=json.dumps([str(path) for path in plan_files]),
    ).start()
    try:
        service.wait_status("/readyz", 200, timeout=120)
        deadline = time.monotonic() + 60
        while 'caj_outbox_backlog{service="catalog"} 0.0' not in service.wait_status("/metrics", 200, 10).text:
            assert time.monotonic() < deadline, "outbox never drained"
            time.sleep(0.2)
    finally:
        service.stop()


def read_all(bootstrap: str, expected: int):
    """Everything on the topic, reading a little past `expected` to catch extras."""
    records = asyncio.run(read_topic(bootstrap, TOPIC, until=lambda rs: len(rs) >= expected, timeout=60))
    extra = asyncio.run(read_topic(bootstrap, TOPIC, until=lambda rs: len(rs) > expected, timeout=3))
    return extra if len(extra) > len(records) else records


def test_start_publishes_changes_only_and_removal_is_a_tombstone(own_kafka_broker, tmp_path):
    both_plans = [DEFAULT_PLAN_FILES[0], SYNTHETIC]
    run_catalog(own_kafka_broker, tmp_path, both_plans, run=1)
    # The 2006 plan's 111 entries and the synthetic plan's 3.
    records = read_all(own_kafka_broker.bootstrap_servers, 114)
    assert len(records) == 114
    events = [from_kafka(key=r.key, value=r.value, headers=r.headers) for r in records]
    assert {e.get_type() for e in events} == {COMMITMENT_PUBLISHED}
    for record, event in zip(records, events, strict=True):
        published = CommitmentPublished.model_validate(event.get_data())
        assert record.key.decode() == published.commitment.id == event.get_subject()
        assert published.revision == 1
    border = next(
        CommitmentPublished.model_validate(e.get_data()) for e in events if e.get_subject() == "caj-2006-2-1-04"
    )
    assert border.commitment.condition.eligible_countries == ["TJ", "AF"]

    # Restarting twice with the same files publishes nothing new.
    run_catalog(own_kafka_broker, tmp_path, both_plans, run=2)
    run_catalog(own_kafka_broker, tmp_path, both_plans, run=3)
    assert len(read_all(own_kafka_broker.bootstrap_servers, 114)) == 114

    # The synthetic plan leaves the configuration: its three commitments are tombstoned.
    run_catalog(own_kafka_broker, tmp_path, [DEFAULT_PLAN_FILES[0]], run=4)
    records = read_all(own_kafka_broker.bootstrap_servers, 117)
    assert len(records) == 117
    tombstones = [r for r in records if r.value is None]  # partitions interleave; find them by value
    assert sorted(r.key.decode() for r in tombstones) == [
        "synthetic-2030-1-0-01", "synthetic-2030-1-0-02", "synthetic-2030-2-0-01",
    ]
    for record in tombstones:
        assert record.value is None
        assert dict(record.headers)["ce_type"] == COMMITMENT_REMOVED.encode()
