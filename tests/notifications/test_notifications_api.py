"""Requests made on the real requests service reach the agencies that must act."""

import time

import httpx
import pytest

from tests.requests.conftest import auth
from tests.service_process import ServiceProcess


@pytest.fixture(scope="module")
def notifications(stack, kafka_bootstrap, tmp_path_factory):
    directory = tmp_path_factory.mktemp("notifications")
    service = ServiceProcess("notifications_service", database_url=f"sqlite:///{directory / 'n.sqlite3'}",
                             kafka_bootstrap=kafka_bootstrap, log_path=directory / "notifications.log").start()
    try:
        service.wait_status("/readyz", 200, timeout=120)
        yield service
    finally:
        service.stop()


def all_items(client, path, key) -> tuple[httpx.Response, list[dict] | None]:
    """Every item of a list, all pages read (the session's broker carries other
    tests' events too, so an agency may have more than a page); None when the
    service does not answer 200 (e.g. the key is not known yet)."""
    items: list[dict] = []
    while True:
        response = client.get(path, headers=auth(key), params={"limit": 100, "offset": len(items)})
        if response.status_code != 200:
            return response, None
        page = response.json()
        items += page["items"]
        if not page["items"] or len(items) >= page["total"]:
            return response, items


def inbox_items(client, key, predicate) -> tuple[httpx.Response, list[dict] | None]:
    """The inbox's first page. It has no offset: acknowledging is how it moves
    on. So a full page with nothing the test looks for (other tests' events:
    progress reports, stale commitments) is acknowledged, to see further."""
    response = client.get("/v1/inbox", headers=auth(key), params={"limit": 100})
    if response.status_code != 200:
        return response, None
    page = response.json()
    if not predicate(page["items"]) and len(page["items"]) < page["total"]:
        for item in page["items"]:
            client.post(f"/v1/inbox/{item['id']}/ack", headers=auth(key))
    return response, page["items"]


def wait_for_items(client, path, key, predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        response, items = inbox_items(client, key, predicate) if path == "/v1/inbox" else all_items(client, path, key)
        if items is not None and predicate(items):
            return items
        assert time.monotonic() < deadline, f"{path}: condition never met; last {response.text[:500]}"
        time.sleep(0.3)


def test_a_request_notifies_the_responsible_agencies_the_requester_and_the_coordinators(stack, notifications, keys):
    tj = keys.make("partner", country="TJ", agency="tj-customs")
    jica = keys.make("partner", country="JP", agency="jica")
    kz = keys.make("partner", country="KZ", agency="kz-customs")
    coordinator = keys.make("coordinator")
    with httpx.Client(base_url=stack.base_url, timeout=30) as requests_api, \
            httpx.Client(base_url=notifications.base_url, timeout=30) as api:
        wait_for_items(requests_api, "/v1/requests", tj, lambda items: True)
        created = requests_api.post("/v1/requests", headers=auth(tj), json={
            "commitment_id": "caj-2006-2-1-04", "title": "Notify me", "description": "Customs posts."})
        assert created.status_code == 201, created.text
        request_id = created.json()["id"]

        def about_this(items, event_suffix):
            """The notifications of one event kind about this request."""
            mine = [i for i in items if request_id in (i["payload"].get("request_id"), i["payload"].get("trigger_id"))]
            return [i for i in mine if i["event_type"].endswith(event_suffix)]

        jica_items = wait_for_items(api, "/v1/notifications", jica,
                                    lambda items: about_this(items, "request.submitted.v1"))
        assert all(item["recipient"] == "jica" for item in jica_items)
        coordinator_inbox = wait_for_items(api, "/v1/inbox", coordinator,
                                           lambda items: about_this(items, "request.submitted.v1"))
        assert coordinator_inbox and all(item["recipient"] == "coordinators" for item in coordinator_inbox)

        requests_api.post(f"/v1/requests/{request_id}/transitions", headers=auth(coordinator),
                          json={"to": "under_review"})
        tj_inbox = wait_for_items(api, "/v1/inbox", tj, lambda items: about_this(items, "status-changed.v1"))
        changed = about_this(tj_inbox, "status-changed.v1")[0]
        assert changed["payload"]["to_status"] == "under_review"

        # Listed by subject: only this request's notifications, and for an agency only its own.
        by_subject = api.get("/v1/notifications", headers=auth(coordinator),
                             params={"subject": request_id, "limit": 100}).json()["items"]
        assert by_subject and all(item["subject"] == request_id for item in by_subject)
        assert {"coordinators", "jica", "tj-customs"} <= {item["recipient"] for item in by_subject}
        tj_by_subject = api.get("/v1/notifications", headers=auth(tj), params={"subject": request_id}).json()
        assert tj_by_subject["total"] >= 1 and {i["recipient"] for i in tj_by_subject["items"]} == {"tj-customs"}
        assert api.get("/v1/notifications", headers=auth(kz), params={"subject": request_id}).json()["total"] == 0

        _, kz_items = all_items(api, "/v1/notifications", kz)
        assert kz_items is not None and not about_this(kz_items, "v1"), "another country's agency hears nothing of it"
        acked = api.post(f"/v1/inbox/{changed['id']}/ack", headers=auth(tj))
        assert acked.status_code == 200 and acked.json()["acknowledged_at"]
        assert api.post(f"/v1/inbox/{changed['id']}/ack", headers=auth(tj)).status_code == 200
        assert api.post(f"/v1/inbox/{changed['id']}/ack", headers=auth(kz)).status_code == 404
        remaining = api.get("/v1/inbox", headers=auth(tj), params={"limit": 100}).json()["items"]
        assert changed["id"] not in [item["id"] for item in remaining]
        assert api.get("/v1/notifications").status_code == 401
        assert 'caj_notifications_created_total{event_type="org.caj-tracker.requests.request.submitted.v1"}' in \
            api.get("/metrics").text


def test_webhook_urls_that_are_not_public_are_refused_by_default(notifications, keys):
    """This service runs with the production default: private addresses refused."""
    agency = "tj-ssrf-check"
    key = keys.make("partner", country="TJ", agency=agency)
    with httpx.Client(base_url=notifications.base_url, timeout=30) as api:
        for url, reason in [("http://127.0.0.1:9/hook", "webhook_url_not_public"),
                            ("http://169.254.169.254/latest/meta-data", "webhook_url_not_public"),
                            ("http://localhost/hook", "webhook_url_not_public"),
                            ("http://[::1]/hook", "webhook_url_not_public"),
                            ("ftp://example.org/hook", "webhook_url_scheme")]:
            refused = api.put(f"/v1/agencies/{agency}/webhook", headers=auth(key), json={"url": url})
            assert refused.status_code == 422, (url, refused.text)
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.json()["reason"] == reason, url
        assert api.get(f"/v1/agencies/{agency}/webhook", headers=auth(key)).status_code == 404, "nothing stored"
