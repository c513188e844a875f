"""Review meetings over HTTP on a real catalog process (SQLite and
PostgreSQL), with real keys and the real broker: who may record one, bad
input stores nothing, the loaded meetings and their sources, the report as
JSON and CSV, and requests.events reaching the report through the consumer."""

import asyncio
import csv
import io
import time
import uuid

import httpx
import pytest

from shared.contracts.requests import OFFER_ACTIVATED, REQUESTS_SOURCE
from shared.events import new_event
from shared.kafka import make_producer
from tests.catalog.progress_support import auth, make_key, post_report, report_body, running_catalog, wait_until_known
from tests.databases import database_backends, empty_database
from tests.kafka_helpers import send_event

FM3 = "caj-2006-foreign-ministers-3"
SOM11 = "caj-2006-senior-officials-11"
MEETING = {"title": "17th Senior Officials' Meeting", "date": "2026-11-20", "place": "Tashkent"}


@pytest.fixture(scope="module", params=database_backends())
def catalog(request, kafka_bootstrap, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"reviews-{request.param}")
    with empty_database(request.param, directory) as url, \
            running_catalog(url, kafka_bootstrap, directory) as service, \
            httpx.Client(base_url=service.base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def keys(catalog, kafka_bootstrap):
    made = {"coordinator": make_key(kafka_bootstrap, "coordinator"),
            "jica": make_key(kafka_bootstrap, "partner", agency="jica", country="JP")}
    for key in made.values():
        wait_until_known(catalog, key)
    return made


def reviews(catalog) -> list[dict]:
    response = catalog.get("/v1/plans/caj-2006/reviews")
    assert response.status_code == 200, response.text
    return response.json()["items"]


def test_the_plans_real_meetings_are_listed_by_date_with_their_sources(catalog):
    items = reviews(catalog)
    assert [item["date"] for item in items] == sorted(item["date"] for item in items)
    fm3 = next(item for item in items if item["id"] == FM3)
    assert (fm3["title"], fm3["date"], fm3["place"]) == ("3rd Foreign Ministers' Meeting", "2010-08-07", "Tashkent")
    assert fm3["source_url"].startswith("https://www.mofa.go.jp/")
    assert catalog.get("/v1/plans/nope/reviews").status_code == 404


@pytest.mark.parametrize(("who", "body", "status", "reason"), [
    (None, MEETING, 401, None),
    ("jica", MEETING, 403, "forbidden"),
    ("coordinator", MEETING | {"date": "2006-06-04"}, 422, "date_before_plan"),
    ("coordinator", MEETING | {"title": ""}, 422, None),
    ("coordinator", MEETING | {"place": "Tash\x00kent"}, 422, None),
    ("coordinator", MEETING | {"date": "not a date"}, 422, None),
    ("coordinator", MEETING | {"agenda": "extra"}, 422, None),
])
def test_only_coordinators_record_and_bad_input_stores_nothing(catalog, keys, who, body, status, reason):
    before = reviews(catalog)
    response = catalog.post("/v1/plans/caj-2006/reviews", json=body, headers=auth(keys[who]) if who else {})
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    if reason:
        assert response.json()["reason"] == reason
    assert reviews(catalog) == before


def test_a_coordinator_records_a_review_and_it_is_listed(catalog, keys):
    response = catalog.post("/v1/plans/caj-2006/reviews", json=MEETING, headers=auth(keys["coordinator"]))
    assert response.status_code == 201, response.text
    created = response.json()
    assert response.headers["location"] == f"/v1/plans/caj-2006/reviews/{created['id']}"
    assert catalog.get(response.headers["location"]).json() == created
    assert created["id"] in [item["id"] for item in reviews(catalog)]
    assert catalog.post("/v1/plans/nope/reviews", json=MEETING,
                        headers=auth(keys["coordinator"])).status_code == 404


def wait_for(condition, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what}: never happened"
        time.sleep(0.1)
    return result


def test_the_report_as_json_and_csv_with_an_activation_from_requests_events(catalog, keys, kafka_bootstrap):
    commitment_id = "caj-2006-2-1-04"
    back_dated = post_report(catalog, keys["coordinator"], commitment_id,
                             report_body("implementation", as_of="2009-01-15"))
    later = post_report(catalog, keys["coordinator"], commitment_id, report_body("closed", as_of="2010-08-08"))
    assert back_dated.status_code == later.status_code == 201
    trigger = str(uuid.uuid4())

    async def publish() -> None:
        producer = make_producer(kafka_bootstrap, client_id="reviews-test")
        await producer.start()
        try:
            await send_event(producer, "requests.events", new_event(
                type=OFFER_ACTIVATED, source=REQUESTS_SOURCE, subject=commitment_id, data={
                    "commitment_id": commitment_id, "condition_type": "on_request", "countries": ["TJ"],
                    "trigger": "request", "trigger_id": trigger, "responsible_agencies": ["jica"],
                    "activated_at": "2010-08-01T06:00:00Z"}), key=commitment_id)
        finally:
            await producer.stop()

    asyncio.run(publish())

    def report_with_activation():
        body = catalog.get(f"/v1/plans/caj-2006/reviews/{FM3}/report").json()
        item = next(c for p in body["pillars"] for c in p["commitments"] if c["id"] == commitment_id)
        return (body, item) if item["activations"] else None

    body, item = wait_for(report_with_activation, "the activation reached the report")
    assert item["activations"] == [{"countries": ["TJ"], "activated_at": "2010-08-01T06:00:00Z"}]
    assert (item["status"], item["last_report"]["id"]) == ("implementation", back_dated.json()["id"])
    assert body["review"]["id"] == FM3 and body["previous_review"]["id"] == "caj-2006-foreign-ministers-2"
    assert {"commitment_id": commitment_id, "from_status": "pipeline", "to_status": "implementation"} in next(
        p for p in body["pillars"] if p["number"] == 2)["changes"]
    assert set(body["counts"]) == {"pipeline", "implementation", "finalisation", "closed", "cancelled", "suspended"}

    as_csv = catalog.get(f"/v1/plans/caj-2006/reviews/{SOM11}/report", params={"format": "csv"})
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(rows) == 111
    row = next(row for row in rows if row["commitment_id"] == commitment_id)
    assert (row["status"], row["last_report_id"], row["activations"]) == ("closed", later.json()["id"], "1")

    assert catalog.get(f"/v1/plans/caj-2006/reviews/{FM3}/report", params={"format": "xml"}).status_code == 422
    assert catalog.get(f"/v1/plans/caj-2006/reviews/{FM3}/report", params={"when": "x"}).status_code == 422
    missing = catalog.get("/v1/plans/caj-2006/reviews/no-such-review/report")
    assert missing.status_code == 404 and missing.json()["reason"] == "review_not_found"


def test_openapi_documents_the_review_operations(catalog):
    paths = catalog.get("/openapi.json").json()["paths"]
    report = paths["/v1/plans/{plan_id}/reviews/{review_id}/report"]["get"]
    assert "text/csv" in report["responses"]["200"]["content"]
    assert any(parameter["name"] == "format" for parameter in report["parameters"])
    assert {"401", "403", "404", "422"} <= set(paths["/v1/plans/{plan_id}/reviews"]["post"]["responses"])


def test_a_report_taken_after_a_review_report_was_served_shows_in_it_at_once(catalog, keys):
    """The process keeps rendered review reports: a new progress report must
    reach the very next request, in both forms."""
    commitment_id = "caj-2006-2-1-05"
    url = f"/v1/plans/caj-2006/reviews/{SOM11}/report"

    def last_report_id(body: dict) -> str | None:
        item = next(c for p in body["pillars"] for c in p["commitments"] if c["id"] == commitment_id)
        return item["last_report"]["id"] if item["last_report"] else None

    before = catalog.get(url).json()
    assert catalog.get(url).json() == before, "served again unchanged"
    assert catalog.get(url, params={"format": "csv"}).status_code == 200
    posted = post_report(catalog, keys["coordinator"], commitment_id,
                         report_body("suspended", as_of="2016-03-24", summary="Paused before the meeting."))
    assert posted.status_code == 201, posted.text
    after = catalog.get(url).json()
    assert last_report_id(after) == posted.json()["id"] != last_report_id(before)
    rows = list(csv.DictReader(io.StringIO(catalog.get(url, params={"format": "csv"}).text)))
    row = next(row for row in rows if row["commitment_id"] == commitment_id)
    assert (row["status"], row["last_report_id"]) == ("suspended", posted.json()["id"])
    # A report after the meeting's date changes nothing in it.
    later = post_report(catalog, keys["coordinator"], commitment_id, report_body("closed", as_of="2016-03-26"))
    assert later.status_code == 201
    assert last_report_id(catalog.get(url).json()) == posted.json()["id"]
