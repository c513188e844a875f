"""Progress across catalog processes sharing one database (SQLite file or
PostgreSQL): a replica shows the reports another took, and staleness is judged
on the service's clock, here run ahead of the machine's."""

import time
from datetime import timedelta

import httpx
import pytest

from tests.catalog.progress_support import (
    days_ago,
    make_key,
    post_report,
    report_body,
    running_catalog,
    today,
    wait_until_known,
)


@pytest.fixture
def coordinator(kafka_bootstrap) -> str:
    return make_key(kafka_bootstrap, "coordinator")


def in_implementation_by_the_text(client: httpx.Client) -> str:
    page = client.get("/v1/commitments", params={"plan_id": "caj-2006", "status": "implementation"}).json()
    return next(item["id"] for item in page["items"] if item["progress"]["source"] == "plan_text")


def stale_ids(client: httpx.Client, stale: bool) -> set[str]:
    page = client.get("/v1/commitments", params={"stale": str(stale).lower(), "limit": 100}).json()
    return {item["id"] for item in page["items"]}


def test_a_replica_shows_the_reports_another_took(database_url, kafka_bootstrap, tmp_path, coordinator):
    settings = {"snapshot_refresh_seconds": "0.5"}
    with running_catalog(database_url, kafka_bootstrap, tmp_path, name="a", **settings) as a, \
            running_catalog(database_url, kafka_bootstrap, tmp_path, name="b", **settings) as b, \
            httpx.Client(base_url=a.base_url, timeout=30) as replica_a, \
            httpx.Client(base_url=b.base_url, timeout=30) as replica_b:
        wait_until_known(replica_a, coordinator)
        target = in_implementation_by_the_text(replica_a)
        for status in ("implementation", "closed"):
            created = post_report(replica_a, coordinator, target, report_body(status, as_of=days_ago(0)))
            assert created.status_code == 201, created.text
            report_id = created.json()["id"]
            deadline = time.monotonic() + 15
            while replica_b.get(f"/v1/commitments/{target}").json()["progress"]["report_id"] != report_id:
                assert time.monotonic() < deadline, "the other replica never showed the report"
                time.sleep(0.1)
            listed = replica_b.get("/v1/commitments", params={"status": status, "limit": 100}).json()["items"]
            assert target in {item["id"] for item in listed}
            assert replica_b.get(f"/v1/commitments/{target}/progress").json()["items"][0]["id"] == report_id


def test_staleness_is_judged_on_the_services_clock(database_url, kafka_bootstrap, tmp_path, coordinator):
    """Reported in implementation today: not stale. The same database served
    by a catalog whose clock is 179, then 181 days ahead: stale only past 180."""
    with running_catalog(database_url, kafka_bootstrap, tmp_path, name="now") as service, \
            httpx.Client(base_url=service.base_url, timeout=30) as catalog:
        wait_until_known(catalog, coordinator)
        target = in_implementation_by_the_text(catalog)
        assert target in stale_ids(catalog, True), "implementation by the 2006 text, never reported"
        assert post_report(catalog, coordinator, target, report_body("implementation")).status_code == 201
        assert target in stale_ids(catalog, False) and target not in stale_ids(catalog, True)

    for days_ahead, stale in ((179, False), (181, True)):
        with running_catalog(database_url, kafka_bootstrap, tmp_path, name=f"ahead-{days_ahead}",
                             clock_offset_days=str(days_ahead)) as service, \
                httpx.Client(base_url=service.base_url, timeout=30) as catalog:
            assert (target in stale_ids(catalog, True)) is stale, days_ahead
            assert (target in stale_ids(catalog, False)) is not stale, days_ahead
            if stale:
                # That clock also judges "not in the future", and stamps the reports.
                wait_until_known(catalog, coordinator)
                ahead = (today() + timedelta(days=100)).isoformat()
                created = post_report(catalog, coordinator, target, report_body("implementation", as_of=ahead))
                assert created.status_code == 201, created.text
                assert target not in stale_ids(catalog, True), "reported today on that clock"
