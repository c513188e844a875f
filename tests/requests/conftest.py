"""A catalog and a requests service, as real processes on the session's broker,
and API keys made the way the `caj` CLI makes them."""

import asyncio
import time

import httpx
import pytest

from caj.keys import create_key
from tests.service_process import ServiceProcess


class Keys:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def make(self, role: str, *, country: str | None = None, agency: str | None = None) -> str:
        _record, key, _registered = asyncio.run(
            create_key(self.bootstrap, role=role, agency_id=agency, country=country)
        )
        return key


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="session")
def keys(kafka_bootstrap) -> Keys:
    return Keys(kafka_bootstrap)


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory, keys):
    """catalog + requests; yields the requests base URL once its offer board is filled."""
    directory = tmp_path_factory.mktemp("requests-stack")
    catalog = ServiceProcess("catalog_service", database_url=f"sqlite:///{directory / 'catalog.sqlite3'}",
                             kafka_bootstrap=kafka_bootstrap, log_path=directory / "catalog.log").start()
    requests_service = ServiceProcess("requests_service", database_url=f"sqlite:///{directory / 'requests.sqlite3'}",
                                      kafka_bootstrap=kafka_bootstrap, log_path=directory / "requests.log",
                                      rate_limit_per_second="1000", rate_limit_burst="1000").start()
    try:
        catalog.wait_status("/readyz", 200, timeout=120)
        requests_service.wait_status("/readyz", 200, timeout=120)
        coordinator = keys.make("coordinator")
        deadline = time.monotonic() + 60
        while True:
            board = httpx.get(requests_service.base_url + "/v1/offers", headers=auth(coordinator)).json()
            if len(board.get("items", [])) >= 12:
                break
            assert time.monotonic() < deadline, f"offer board never filled: {board}"
            time.sleep(0.3)
        yield requests_service
    finally:
        requests_service.stop()
        catalog.stop()
