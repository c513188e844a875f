"""Acceptance 5: /readyz answers 503 while the broker is down and 200 again
after it returns, without restarting the service."""

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.service_process import ServiceProcess


def broker_reachable(service: ServiceProcess) -> float | None:
    """caj_kafka_broker_reachable on the service's /metrics (the KafkaBrokerUnreachable alert)."""
    for family in text_string_to_metric_families(httpx.get(service.base_url + "/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name == "caj_kafka_broker_reachable" and sample.labels == {"service": "requests"}:
                return sample.value
    return None


def test_readyz_follows_the_broker_down_and_back_up(own_kafka_broker, tmp_path):
    service = ServiceProcess(
        "requests_service",
        database_url=f"sqlite:///{tmp_path / 'requests.sqlite3'}",
        kafka_bootstrap=own_kafka_broker.bootstrap_servers,
        log_path=tmp_path / "requests.log",
    ).start()
    try:
        ready = service.wait_status("/readyz", 200, timeout=90).json()
        assert ready["checks"]["kafka"]["ok"] and ready["checks"]["consumers"]["ok"]
        assert broker_reachable(service) == 1.0
        pid = service.process.pid

        own_kafka_broker.stop()
        down = service.wait_status("/readyz", 503, timeout=60).json()
        assert down["status"] == "not_ready"
        assert down["checks"]["kafka"]["ok"] is False
        assert down["checks"]["database"]["ok"] is True
        assert service.wait_status("/livez", 200, timeout=5).json() == {"status": "alive"}
        assert broker_reachable(service) == 0.0

        own_kafka_broker.start()
        service.wait_status("/readyz", 200, timeout=120)
        assert broker_reachable(service) == 1.0
        assert service.process.pid == pid and service.process.poll() is None, "the service must not restart"
    finally:
        service.stop()


def test_service_starts_without_kafka_and_becomes_ready_when_it_appears(tmp_path):
    """A broker that is not there yet makes the service unready, not dead."""
    from tests.conftest import KafkaBroker

    broker = KafkaBroker(tmp_path / "kafka")
    service = ServiceProcess(
        "catalog_service",
        database_url=f"sqlite:///{tmp_path / 'catalog.sqlite3'}",
        kafka_bootstrap=broker.bootstrap_servers,
        log_path=tmp_path / "catalog.log",
    ).start()
    try:
        body = service.wait_status("/readyz", 503, timeout=30).json()
        assert body["checks"]["kafka"] == {"ok": False, "detail": "not connected yet"}
        broker.start(fresh=True)
        service.wait_status("/readyz", 200, timeout=120)
    finally:
        service.stop()
        broker.stop()


def test_readyz_is_503_until_migrations_have_run(kafka_bootstrap, tmp_path):
    service = ServiceProcess(
        "catalog_service",
        database_url=f"sqlite:///{tmp_path / 'catalog.sqlite3'}",
        kafka_bootstrap=kafka_bootstrap,
        log_path=tmp_path / "catalog.log",
    ).start(migrate=False)
    try:
        body = service.wait_status("/readyz", 503, timeout=30).json()
        assert "run migrations" in body["checks"]["database"]["detail"]
    finally:
        service.stop()
