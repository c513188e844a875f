"""The per-key rate limit on a real process, and the `caj keys` command line."""

import os
import subprocess
import time

import httpx

from shared.settings import REPO_ROOT
from tests.requests.conftest import auth
from tests.service_process import ServiceProcess

CAJ = str(REPO_ROOT / ".venv" / "bin" / "caj")


def test_a_key_over_its_rate_gets_429_with_retry_after(kafka_bootstrap, keys, tmp_path):
    service = ServiceProcess("requests_service", database_url=f"sqlite:///{tmp_path / 'requests.sqlite3'}",
                             kafka_bootstrap=kafka_bootstrap, log_path=tmp_path / "requests.log",
                             rate_limit_per_second="0.5", rate_limit_burst="3").start()
    try:
        service.wait_status("/readyz", 200, timeout=120)
        busy, calm, probe = keys.make("operator"), keys.make("operator"), keys.make("operator")
        # identity.keys has one partition: once the last key is known, all are.
        deadline = time.monotonic() + 10
        while httpx.get(service.base_url + "/v1/offers", headers=auth(probe)).status_code == 401:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        statuses = [httpx.get(service.base_url + "/v1/requests", headers=auth(busy)).status_code for _ in range(5)]
        assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
        limited = httpx.get(service.base_url + "/v1/requests", headers=auth(busy))
        assert limited.json()["reason"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 2
        assert httpx.get(service.base_url + "/v1/requests", headers=auth(calm)).status_code == 200, "limits are per key"
    finally:
        service.stop()


def run_caj(*args: str, bootstrap: str) -> subprocess.CompletedProcess:
    return subprocess.run([CAJ, *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, CAJ_KAFKA_BOOTSTRAP_SERVERS=bootstrap))


def test_caj_keys_create_list_revoke(kafka_bootstrap):
    agency = f"tj-cli-{int(time.time())}"
    created = run_caj("keys", "create", "--role", "partner", "--country", "TJ", "--agency", agency,
                      bootstrap=kafka_bootstrap)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("caj_") and len(key.split("_")[1]) == 16
    assert f"registered agency {agency}" in created.stderr

    again = run_caj("keys", "create", "--role", "partner", "--country", "TJ", "--agency", agency,
                    bootstrap=kafka_bootstrap)
    assert again.returncode == 0 and "registered agency" not in again.stderr
    wrong_country = run_caj("keys", "create", "--role", "partner", "--country", "KZ", "--agency", agency,
                            bootstrap=kafka_bootstrap)
    assert wrong_country.returncode == 2 and "registered for TJ" in wrong_country.stderr
    coordinator = run_caj("keys", "create", "--role", "coordinator", bootstrap=kafka_bootstrap)
    assert coordinator.returncode == 0 and coordinator.stdout.startswith("caj_")
    missing = run_caj("keys", "create", "--role", "partner", "--country", "TJ", bootstrap=kafka_bootstrap)
    assert missing.returncode == 2 and "needs --agency and --country" in missing.stderr

    key_id = key.split("_")[1]
    listed = run_caj("keys", "list", bootstrap=kafka_bootstrap)
    line = next(line for line in listed.stdout.splitlines() if line.startswith(key_id))
    assert "partner" in line and agency in line and "TJ" in line and line.rstrip().endswith("-")
    assert key.split("_", 2)[2] not in listed.stdout, "secrets are never listed"

    revoked = run_caj("keys", "revoke", key_id, bootstrap=kafka_bootstrap)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    listed = run_caj("keys", "list", bootstrap=kafka_bootstrap)
    line = next(line for line in listed.stdout.splitlines() if line.startswith(key_id))
    assert not line.rstrip().endswith("-")
    assert run_caj("keys", "revoke", "0000000000000000", bootstrap=kafka_bootstrap).returncode == 2


def test_the_offer_board_survives_a_restart_of_the_requests_service(kafka_bootstrap, keys, tmp_path):
    database_url = f"sqlite:///{tmp_path / 'requests.sqlite3'}"
    catalog = ServiceProcess("catalog_service", database_url=f"sqlite:///{tmp_path / 'catalog.sqlite3'}",
                             kafka_bootstrap=kafka_bootstrap, log_path=tmp_path / "catalog.log").start()
    coordinator = keys.make("coordinator")

    def board(service) -> list:
        return httpx.get(service.base_url + "/v1/offers", headers=auth(coordinator)).json().get("items", [])

    first = ServiceProcess("requests_service", database_url=database_url, kafka_bootstrap=kafka_bootstrap,
                           log_path=tmp_path / "requests-1.log").start()
    try:
        first.wait_status("/readyz", 200, timeout=120)
        deadline = time.monotonic() + 60
        while len(board(first)) < 12:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        before = board(first)
    finally:
        first.stop()
        catalog.stop()  # the catalog is down too: the board must come from the database alone
    second = ServiceProcess("requests_service", database_url=database_url, kafka_bootstrap=kafka_bootstrap,
                            log_path=tmp_path / "requests-2.log").start(migrate=False)
    try:
        second.wait_status("/readyz", 200, timeout=120)
        assert board(second) == before
    finally:
        second.stop()
