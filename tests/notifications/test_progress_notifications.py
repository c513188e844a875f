"""A progress report reaches the agencies responsible for the commitment, the
agencies of the countries it benefits, and the coordinators: by the routing
rules, and end to end from a report posted to a running catalog to the
inboxes of a running notifications service."""

import time

import httpx
import pytest

from notifications_service.routing import load_rules, recipients_for
from shared.contracts.catalog import PROGRESS_REPORTED
from tests.catalog.progress_support import auth, make_key, post_report, report_body, wait_until_known
from tests.service_process import ready_services

COUNTRY_AGENCIES = {"KZ": ["kz-mfa"], "TJ": ["tj-mfa", "tj-border-service"]}


def test_a_report_is_routed_to_responsible_agencies_beneficiary_countries_and_coordinators():
    data = {"responsible_agencies": ["jica", "tj-mfa"], "beneficiary_countries": ["TJ", "KZ", "UZ"]}
    recipients = recipients_for(load_rules(), PROGRESS_REPORTED, data, lambda c: COUNTRY_AGENCIES.get(c, []))
    assert recipients == ["jica", "tj-mfa", "tj-border-service", "kz-mfa", "coordinators"]


@pytest.fixture(scope="module")
def services(kafka_bootstrap, tmp_path_factory):
    with ready_services(["catalog_service", "notifications_service"], kafka_bootstrap=kafka_bootstrap,
                        directory=tmp_path_factory.mktemp("progress-notifications"),
                        rate_limit_per_second="1000", rate_limit_burst="1000") as started:
        yield started["catalog_service"], started["notifications_service"]


def about_report(client: httpx.Client, path: str, key: str, report_id: str, **params: str) -> list[dict] | None:
    """The notifications of the report that the caller sees at `path`, every
    page read (the session's broker carries other tests' reports too); None
    while the caller's key is not known yet."""
    found, offset = [], 0
    while True:
        response = client.get(path, headers=auth(key), params={"limit": 100, "offset": offset} | params)
        if response.status_code == 401:
            return None
        assert response.status_code == 200, response.text
        page = response.json()
        found += [item for item in page["items"]
                  if item["event_type"] == PROGRESS_REPORTED and item["payload"].get("report_id") == report_id]
        offset += 100
        if offset >= page["total"]:
            return found


def notifications_of(client: httpx.Client, path: str, key: str, report_id: str, timeout: float = 60,
                     **params: str) -> list[dict]:
    """The caller's notifications about the report, once there are some."""
    deadline = time.monotonic() + timeout
    while not (about := about_report(client, path, key, report_id, **params)):
        assert time.monotonic() < deadline, f"{path}: no notification of {report_id}"
        time.sleep(0.3)
    return about


def inbox_notifications_of(client: httpx.Client, key: str, report_id: str, timeout: float = 60) -> list[dict]:
    """The report's notifications in the caller's inbox. The inbox has no
    offset and lists the oldest first, and this service's inbox holds the
    whole session's events: what is not about the report is acknowledged
    (in this test's own notifications database) so that later ones show."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/v1/inbox", headers=auth(key), params={"limit": 100})
        if response.status_code == 200:
            items = response.json()["items"]
            about = [item for item in items
                     if item["event_type"] == PROGRESS_REPORTED and item["payload"].get("report_id") == report_id]
            if about:
                return about
            for item in items:
                acknowledged = client.post(f"/v1/inbox/{item['id']}/ack", headers=auth(key))
                assert acknowledged.status_code == 200, acknowledged.text
            if items:
                continue  # the next page, at once
        else:
            assert response.status_code == 401, response.text  # the key is not known here yet
        assert time.monotonic() < deadline, f"/v1/inbox: no notification of {report_id}"
        time.sleep(0.3)


def test_a_report_posted_to_the_catalog_reaches_the_agencies_and_the_coordinators(services, kafka_bootstrap):
    catalog_process, notifications_process = services
    with httpx.Client(base_url=catalog_process.base_url, timeout=30) as catalog, \
            httpx.Client(base_url=notifications_process.base_url, timeout=30) as notifications:
        commitments = catalog.get("/v1/commitments", params={"plan_id": "caj-2006", "limit": 100}).json()["items"]
        target = next(item for item in commitments
                      if "jica" in [agency["id"] for agency in item["responsible_agencies"]]
                      and "TJ" in item["beneficiaries"] and "UZ" not in item["beneficiaries"])
        jica = make_key(kafka_bootstrap, "partner", agency="jica", country="JP")
        # An agency of a beneficiary country that the catalog does not name: known through identity.
        watcher = make_key(kafka_bootstrap, "partner", agency="tj-progress-watch", country="TJ")
        bystander = make_key(kafka_bootstrap, "partner", agency="uz-progress-bystander", country="UZ")
        coordinator = make_key(kafka_bootstrap, "coordinator")
        wait_until_known(catalog, jica)

        created = post_report(catalog, jica, target["id"], report_body(
            "implementation", summary="The first trainees graduated.", figures={"trainees": 950}))
        assert created.status_code == 201, created.text
        report_id = created.json()["id"]

        for_jica = notifications_of(notifications, "/v1/notifications", jica, report_id)
        assert [item["recipient"] for item in for_jica] == ["jica"]
        assert for_jica[0]["subject"] == target["id"]
        assert for_jica[0]["payload"]["figures"] == {"trainees": 950}
        assert for_jica[0]["payload"]["current"]["report_id"] == report_id
        for_watcher = notifications_of(notifications, "/v1/notifications", watcher, report_id)
        assert [item["recipient"] for item in for_watcher] == ["tj-progress-watch"]
        in_inbox = inbox_notifications_of(notifications, coordinator, report_id)
        assert [item["recipient"] for item in in_inbox] == ["coordinators"]

        # One event's notifications are made in one transaction: now that some
        # are here, all are. Every responsible agency has one; an agency of a
        # country the commitment does not benefit has none.
        for agency in target["responsible_agencies"]:
            assert about_report(notifications, "/v1/notifications", coordinator, report_id,
                                recipient=agency["id"], event_type=PROGRESS_REPORTED), agency["id"]
        deadline = time.monotonic() + 30
        while (seen_by_bystander := about_report(notifications, "/v1/notifications", bystander, report_id)) is None:
            assert time.monotonic() < deadline, "the notifications service never learnt of the bystander's key"
            time.sleep(0.3)
        assert seen_by_bystander == []
