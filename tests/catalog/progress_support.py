"""What the progress tests share: a catalog process, API keys made the way the
`caj` CLI makes them, and small calls on the progress API."""

import asyncio
import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx

from caj.keys import create_key, revoke_key
from tests.service_process import ServiceProcess

# Generous limits: the tests are one caller sending fast.
UNLIMITED = {"rate_limit_per_second": "100000", "rate_limit_burst": "100000"}


def today() -> date:
    """The catalog's day when its clock is the machine's (UTC)."""
    return datetime.now(UTC).date()


def days_ago(days: int) -> str:
    return (today() - timedelta(days=days)).isoformat()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def make_key(bootstrap: str, role: str, *, agency: str | None = None, country: str | None = None) -> str:
    _record, key, _registered = asyncio.run(create_key(bootstrap, role=role, agency_id=agency, country=country))
    return key


def revoke(bootstrap: str, key: str) -> None:
    asyncio.run(revoke_key(bootstrap, key.split("_")[1]))


@contextlib.contextmanager
def running_catalog(database_url: str, kafka_bootstrap: str, directory: Path, *, name: str = "catalog",
                    **settings: str) -> Iterator[ServiceProcess]:
    service = ServiceProcess("catalog_service", database_url=database_url, kafka_bootstrap=kafka_bootstrap,
                             log_path=directory / f"{name}.log", **(UNLIMITED | settings)).start()
    try:
        service.wait_status("/readyz", 200, timeout=120)
        yield service
    finally:
        service.stop()


def report_body(status: str = "implementation", *, as_of: str | None = None, summary: str = "Work under way.",
                **extra) -> dict:
    return {"status": status, "as_of": as_of or days_ago(1), "summary": summary} | extra


def post_report(client: httpx.Client, key: str | None, commitment_id: str, body: dict) -> httpx.Response:
    return client.post(f"/v1/commitments/{commitment_id}/progress", json=body,
                       headers=auth(key) if key else {})


def wait_until_known(client: httpx.Client, key: str, timeout: float = 30) -> None:
    """Until the catalog's key store has the key: a report on no commitment
    answers 404 once the key is known (401 before), and stores nothing."""
    deadline = time.monotonic() + timeout
    while (status := post_report(client, key, "no-such-commitment", report_body()).status_code) == 401:
        assert time.monotonic() < deadline, "the catalog never learnt of the key"
        time.sleep(0.1)
    assert status == 404


def wait_until_refused(client: httpx.Client, key: str, timeout: float = 30) -> None:
    """Until the catalog has learnt of the key's revocation."""
    deadline = time.monotonic() + timeout
    while post_report(client, key, "no-such-commitment", report_body()).status_code != 401:
        assert time.monotonic() < deadline, "the revocation never reached the catalog"
        time.sleep(0.1)


def reports_of(client: httpx.Client, commitment_id: str) -> list[dict]:
    response = client.get(f"/v1/commitments/{commitment_id}/progress", params={"limit": 100})
    assert response.status_code == 200, response.text
    return response.json()["items"]
