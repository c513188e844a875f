"""Progress reports over HTTP on a real catalog process (SQLite and PostgreSQL),
with real keys on the real broker: who may report, what a report must say,
append-only corrections, the status that holds, read-your-writes, filters,
the events, and the IATI export."""

import asyncio
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from lxml import etree

from shared.contracts.catalog import (
    COMMITMENT_PUBLISHED,
    PROGRESS_REPORTED,
    PROGRESS_STATUSES,
    CommitmentPublished,
    ProgressReported,
)
from shared.events import from_kafka
from tests.catalog.progress_support import (
    auth,
    days_ago,
    make_key,
    post_report,
    report_body,
    reports_of,
    revoke,
    running_catalog,
    today,
    wait_until_known,
    wait_until_refused,
)
from tests.catalog.test_api import IATI_SCHEMA
from tests.databases import database_backends, empty_database
from tests.kafka_helpers import read_topic

IATI_NS = {"caj": "https://caj-tracker.org/ns/iati-extension/1"}


@pytest.fixture(scope="module", params=database_backends())
def catalog(request, kafka_bootstrap, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"progress-{request.param}")
    with empty_database(request.param, directory) as url, \
            running_catalog(url, kafka_bootstrap, directory) as service, \
            httpx.Client(base_url=service.base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def unreported(catalog):
    """Commitments no test has reported on yet, that name responsible agencies;
    each test takes its own."""
    items, offset = [], 0
    while True:
        page = catalog.get("/v1/commitments", params={"plan_id": "caj-2006", "limit": 100, "offset": offset}).json()
        items += page["items"]
        if not page["next"]:
            break
        offset += 100
    pool = [item for item in items if item["responsible_agencies"] and item["beneficiaries"]]

    def take(status: str | None = None) -> dict:
        chosen = next(item for item in pool if status is None or item["progress"]["status"] == status)
        pool.remove(chosen)
        return chosen

    return take


@pytest.fixture(scope="module")
def bystander(unreported) -> str:
    """A commitment that refused reports are tried on: it must never change."""
    return unreported()["id"]


@pytest.fixture(scope="module")
def keys(catalog, kafka_bootstrap):
    made = {
        "coordinator": make_key(kafka_bootstrap, "coordinator"),
        "operator": make_key(kafka_bootstrap, "operator"),
        # Agencies the catalog names as responsible for many commitments.
        "kz-mfa": make_key(kafka_bootstrap, "partner", agency="kz-mfa", country="KZ"),
        "jica": make_key(kafka_bootstrap, "partner", agency="jica", country="JP"),
        "stranger": make_key(kafka_bootstrap, "partner", agency="kz-progress-stranger", country="KZ"),
    }
    for key in made.values():
        wait_until_known(catalog, key)
    return made


def commitment(catalog, commitment_id: str) -> dict:
    response = catalog.get(f"/v1/commitments/{commitment_id}")
    assert response.status_code == 200, response.text
    return response.json()


# -- who may report -----------------------------------------------------------------------------
def test_permission_matrix(catalog, keys, unreported, kafka_bootstrap):
    target = unreported()
    target_id, responsible = target["id"], [agency["id"] for agency in target["responsible_agencies"]]
    partner = next(name for name in ("kz-mfa", "jica") if name in responsible)
    other = next(name for name in ("kz-mfa", "jica") if name not in responsible)
    revoked = make_key(kafka_bootstrap, "coordinator")
    wait_until_known(catalog, revoked)
    revoke(kafka_bootstrap, revoked)
    wait_until_refused(catalog, revoked)
    reports_before = len(reports_of(catalog, target_id))

    refused = {
        "another partner": (keys[other], 403, "agency_not_responsible"),
        "a partner of no commitment": (keys["stranger"], 403, "agency_not_responsible"),
        "an operator": (keys["operator"], 403, "forbidden"),
        "no key": (None, 401, "unauthenticated"),
        "a key that is not one": ("caj_0123456789abcdef_not-a-secret", 401, "unauthenticated"),
        "a malformed key": ("hello", 401, "unauthenticated"),
        "a revoked key": (revoked, 401, "unauthenticated"),
    }
    for who, (key, status, reason) in refused.items():
        response = post_report(catalog, key, target_id, report_body())
        assert response.status_code == status, (who, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["reason"] == reason, who

    unknown = post_report(catalog, keys["coordinator"], "caj-2006-9-9-99", report_body())
    assert unknown.status_code == 404 and unknown.json()["reason"] == "commitment_not_found"
    assert post_report(catalog, keys[partner], "caj-2006-9-9-99", report_body()).status_code == 404

    by_partner = post_report(catalog, keys[partner], target_id, report_body(summary="By the responsible agency."))
    assert by_partner.status_code == 201, by_partner.text
    assert by_partner.json()["reported_by"] == {"role": "partner", "agency_id": partner}
    by_coordinator = post_report(catalog, keys["coordinator"], target_id, report_body(summary="By a coordinator."))
    assert by_coordinator.status_code == 201, by_coordinator.text
    assert by_coordinator.json()["reported_by"] == {"role": "coordinator", "agency_id": None}
    # Only the two accepted reports were added; the refusals stored nothing.
    assert len(reports_of(catalog, target_id)) == reports_before + 2
    # Reads stay public.
    assert catalog.get(f"/v1/commitments/{target_id}/progress").status_code == 200


# -- a report, as answered and read back ---------------------------------------------------------
def test_a_report_is_answered_with_its_id_and_location_and_listed_newest_first(catalog, keys, unreported):
    target_id = unreported()["id"]
    body = report_body("implementation", as_of=days_ago(30), summary="  Trainees finished the first course.  ",
                       evidence=[{"title": "Course report", "url": "https://example.org/reports/course-1.pdf"},
                                 {"title": "Minutes of the steering committee", "reference": "SC-2026/04"}],
                       figures={"trainees": 950, "share_women": 0.4, "region": "Fergana valley"})
    created = post_report(catalog, keys["coordinator"], target_id, body)
    assert created.status_code == 201, created.text
    report = created.json()
    assert created.headers["location"] == f"/v1/commitments/{target_id}/progress/{report['id']}"
    assert report["commitment_id"] == target_id and report["status"] == "implementation"
    assert report["as_of"] == body["as_of"] and report["summary"] == "Trainees finished the first course."
    assert report["evidence"] == [
        {"title": "Course report", "url": "https://example.org/reports/course-1.pdf", "reference": None},
        {"title": "Minutes of the steering committee", "url": None, "reference": "SC-2026/04"},
    ]
    assert report["figures"] == {"trainees": 950, "share_women": 0.4, "region": "Fergana valley"}
    assert report["supersedes"] is None and report["superseded_by"] is None
    assert catalog.get(created.headers["location"]).json() == report

    later = [post_report(catalog, keys["coordinator"], target_id, report_body(summary=f"Update {n}")).json()["id"]
             for n in range(3)]
    listed = catalog.get(f"/v1/commitments/{target_id}/progress", params={"limit": 2}).json()
    assert listed["total"] == 4 and [item["id"] for item in listed["items"]] == later[::-1][:2]
    rest = catalog.get(listed["next"]).json()
    assert [item["id"] for item in rest["items"]] == [later[0], report["id"]] and rest["next"] is None
    assert catalog.get(f"/v1/commitments/{target_id}/progress/no-such-report").json()["reason"] == "report_not_found"
    assert catalog.get(f"/v1/commitments/{target_id}/progress/bad%00id").json()["reason"] == "validation_failed"
    assert post_report(catalog, keys["coordinator"], "bad%00id", report_body()).status_code == 422
    assert catalog.get("/v1/commitments/caj-2006-9-9-99/progress").status_code == 404
    assert catalog.get(f"/v1/commitments/{target_id}/progress", params={"limt": 2}).status_code == 422


# -- bad input stores nothing -----------------------------------------------------------------------
BAD_BODIES = {
    "unknown status": (report_body("done"), 422, "validation_failed"),
    "a date in the future": (report_body(as_of=(today() + timedelta(days=2)).isoformat()), 422, "as_of_in_future"),
    "a date before the plan": (report_body(as_of="2006-06-04"), 422, "as_of_before_plan"),
    "not a date": (report_body(as_of="last spring"), 422, "validation_failed"),
    "an empty summary": (report_body(summary=""), 422, "validation_failed"),
    "a blank summary": (report_body(summary="   \n "), 422, "validation_failed"),
    "a summary too long": (report_body(summary="x" * 4001), 422, "validation_failed"),
    "a summary with a NUL": (report_body(summary="Done.\x00"), 422, "validation_failed"),
    "a title with a control character": (report_body(evidence=[{"title": "\x1b[31m", "reference": "R-1"}]), 422,
                                         "validation_failed"),
    "a malformed report to supersede": (report_body(supersedes="r'; --"), 422, "validation_failed"),
    "no summary": ({"status": "closed", "as_of": days_ago(1)}, 422, "validation_failed"),
    "an ftp URL": (report_body(evidence=[{"title": "t", "url": "ftp://example.org/r.pdf"}]), 422,
                   "validation_failed"),
    "a javascript URL": (report_body(evidence=[{"title": "t", "url": "javascript:alert(1)"}]), 422,
                         "validation_failed"),
    "a URL without a host": (report_body(evidence=[{"title": "t", "url": "https:///r.pdf"}]), 422,
                             "validation_failed"),
    "a URL with a space": (report_body(evidence=[{"title": "t", "url": "https://example.org/a b"}]), 422,
                           "validation_failed"),
    "evidence with a url and a reference": (
        report_body(evidence=[{"title": "t", "url": "https://example.org", "reference": "R-1"}]), 422,
        "validation_failed"),
    "evidence with neither": (report_body(evidence=[{"title": "t"}]), 422, "validation_failed"),
    "evidence without a title": (report_body(evidence=[{"title": " ", "reference": "R-1"}]), 422,
                                 "validation_failed"),
    "too much evidence": (report_body(evidence=[{"title": "t", "reference": f"R-{n}"} for n in range(21)]), 422,
                          "validation_failed"),
    "a figure that is a boolean": (report_body(figures={"done": True}), 422, "validation_failed"),
    "a figure that is a list": (report_body(figures={"trainees": [1, 2]}), 422, "validation_failed"),
    "a figure with a bad name": (report_body(figures={"trainees; drop": 1}), 422, "validation_failed"),
    "an unknown field": (report_body(priority="high"), 422, "validation_failed"),
    "an unknown report to supersede": (report_body(supersedes="00000000-0000-0000-0000-000000000000"), 422,
                                       "superseded_report_not_found"),
    "an oversized body": (report_body(summary="x" * (70 * 1024)), 413, "payload_too_large"),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_input_is_refused_with_a_reason_and_stores_nothing(catalog, keys, bystander, case):
    target_id = bystander
    before = commitment(catalog, target_id)
    reports_before = reports_of(catalog, target_id)
    body, status, reason = BAD_BODIES[case]
    response = post_report(catalog, keys["coordinator"], target_id, body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["reason"] == reason
    assert reports_of(catalog, target_id) == reports_before
    after = commitment(catalog, target_id)
    assert (after["revision"], after["progress"]) == (before["revision"], before["progress"])


def test_a_chunked_body_over_the_limit_is_refused_too(catalog, keys, bystander):
    def chunks():
        for _ in range(80):
            yield b"x" * 1024

    response = catalog.post(f"/v1/commitments/{bystander}/progress", content=chunks(),
                            headers=auth(keys["coordinator"]) | {"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["reason"] == "payload_too_large"
    assert reports_of(catalog, bystander) == []


# -- append-only corrections ------------------------------------------------------------------------
def test_a_correction_supersedes_and_nothing_is_edited(catalog, keys, unreported, bystander):
    target_id = unreported()["id"]
    coordinator = keys["coordinator"]
    mistaken = post_report(catalog, coordinator, target_id,
                           report_body("closed", as_of=days_ago(5), summary="Closed (a mistake).")).json()
    assert commitment(catalog, target_id)["progress"]["report_id"] == mistaken["id"]

    # The correction is dated earlier than the report it corrects: the
    # superseded report no longer counts, whatever its date.
    correction = post_report(catalog, coordinator, target_id,
                             report_body("implementation", as_of=days_ago(20), summary="Still under way.",
                                         supersedes=mistaken["id"]))
    assert correction.status_code == 201, correction.text
    correction_id = correction.json()["id"]
    assert correction.json()["supersedes"] == mistaken["id"]
    progress = commitment(catalog, target_id)["progress"]
    assert (progress["status"], progress["report_id"], progress["as_of"]) == (
        "implementation", correction_id, days_ago(20))

    listed = reports_of(catalog, target_id)
    assert [item["id"] for item in listed] == [correction_id, mistaken["id"]]
    kept = listed[1]
    assert kept["superseded_by"] == correction_id
    assert {k: v for k, v in kept.items() if k != "superseded_by"} == {
        k: v for k, v in mistaken.items() if k != "superseded_by"}, "the corrected report is kept as it was"

    again = post_report(catalog, coordinator, target_id, report_body(supersedes=mistaken["id"]))
    assert again.status_code == 409 and again.json()["reason"] == "report_already_superseded"
    assert again.json()["superseded_by"] == correction_id
    elsewhere = post_report(catalog, coordinator, bystander, report_body(supersedes=correction_id))
    assert elsewhere.status_code == 422 and elsewhere.json()["reason"] == "superseded_report_not_found"
    assert len(reports_of(catalog, target_id)) == 2


# -- the status that holds ----------------------------------------------------------------------------
def test_the_latest_report_by_as_of_holds_and_ties_go_to_the_later_report(catalog, keys, unreported):
    target = unreported("pipeline")
    target_id = target["id"]
    assert target["progress"] == {"status": "pipeline", "source": "plan_text", "as_of": "2006-06-05",
                                  "report_id": None, "reported_at": None}
    coordinator = keys["coordinator"]

    first = post_report(catalog, coordinator, target_id, report_body("implementation", as_of=days_ago(10))).json()
    progress = commitment(catalog, target_id)["progress"]
    assert progress == {"status": "implementation", "source": "report", "as_of": days_ago(10),
                        "report_id": first["id"], "reported_at": first["reported_at"]}

    # Back-dated: reported later about an earlier day; the later day still holds.
    back_dated = post_report(catalog, coordinator, target_id, report_body("suspended", as_of=days_ago(40)))
    assert back_dated.status_code == 201
    assert commitment(catalog, target_id)["progress"]["report_id"] == first["id"]

    # The same as_of: the later report holds.
    tie = post_report(catalog, coordinator, target_id, report_body("finalisation", as_of=days_ago(10))).json()
    progress = commitment(catalog, target_id)["progress"]
    assert (progress["status"], progress["report_id"]) == ("finalisation", tie["id"])

    # A later as_of holds, whoever reported it.
    latest = post_report(catalog, coordinator, target_id, report_body("closed", as_of=days_ago(2))).json()
    detail = commitment(catalog, target_id)
    assert (detail["progress"]["status"], detail["progress"]["report_id"]) == ("closed", latest["id"])
    assert detail["status"] == target["status"], "the status read from the text stays as the text has it"


def test_reads_right_after_a_write_show_it(catalog, keys, unreported):
    """Read-your-writes on this process: the list, the detail, the filters and
    the IATI export show a report as soon as its POST has answered."""
    target_id = unreported()["id"]
    for status in ("implementation", "suspended", "implementation", "closed", "cancelled"):
        report = post_report(catalog, keys["coordinator"], target_id, report_body(status, as_of=days_ago(0)))
        assert report.status_code == 201
        report_id = report.json()["id"]
        assert commitment(catalog, target_id)["progress"]["report_id"] == report_id
        page = catalog.get("/v1/commitments", params={"status": status, "limit": 100}).json()
        assert target_id in [item["id"] for item in page["items"]]
        listed = next(item for item in page["items"] if item["id"] == target_id)
        assert listed["progress"]["report_id"] == report_id
        iati = etree.fromstring(catalog.get("/v1/plans/caj-2006/iati.xml").content)
        activity = next(a for a in iati.findall("iati-activity") if a.findtext("iati-identifier").endswith(target_id))
        assert activity.find("activity-status").get("code") == str(PROGRESS_STATUSES[status])


def test_status_filter_and_every_commitment_carries_progress(catalog):
    everything = catalog.get("/v1/commitments", params={"limit": 100}).json()
    assert all(set(item["progress"]) == {"status", "source", "as_of", "report_id", "reported_at"}
               for item in everything["items"])
    total = 0
    for status in PROGRESS_STATUSES:
        page = catalog.get("/v1/commitments", params={"status": status, "limit": 100}).json()
        assert all(item["progress"]["status"] == status for item in page["items"])
        total += page["total"]
    assert total == everything["total"]
    refused = catalog.get("/v1/commitments", params={"status": "done"})
    assert refused.status_code == 422 and refused.json()["reason"] == "validation_failed"
    assert catalog.get("/v1/commitments", params={"stale": "maybe"}).status_code == 422


def test_stale_filter_on_the_live_clock(catalog, keys, unreported):
    """Implementation read from the 2006 text, never reported: stale long ago.
    A fresh report in implementation is not stale; the two filters split the list."""
    target_id = unreported("implementation")["id"]
    stale_ids = {item["id"] for item in catalog.get("/v1/commitments", params={"stale": "true", "limit": 100})
                 .json()["items"]}
    assert target_id in stale_ids
    assert post_report(catalog, keys["coordinator"], target_id, report_body("implementation")).status_code == 201
    stale = catalog.get("/v1/commitments", params={"stale": "true", "limit": 100}).json()
    fresh = catalog.get("/v1/commitments", params={"stale": "false", "limit": 100}).json()
    assert target_id not in {item["id"] for item in stale["items"]}
    assert target_id in {item["id"] for item in fresh["items"]}
    everything = catalog.get("/v1/commitments", params={"limit": 1}).json()["total"]
    assert stale["total"] + fresh["total"] == everything
    assert all(item["progress"]["status"] == "implementation" for item in stale["items"])
    encoded = catalog.get("/v1/commitments?st%61le=true&limit=100")
    assert encoded.status_code == 200 and encoded.json()["items"] == stale["items"]


# -- events ----------------------------------------------------------------------------------------------
def test_a_report_and_the_new_state_are_published(catalog, keys, unreported, kafka_bootstrap):
    target = unreported()
    target_id = target["id"]
    partner = next(name for name in ("kz-mfa", "jica")
                   if name in [agency["id"] for agency in target["responsible_agencies"]])
    report = post_report(catalog, keys[partner], target_id, report_body(
        "implementation", evidence=[{"title": "Report", "url": "https://example.org/r"}],
        figures={"trainees": 12})).json()
    revision = commitment(catalog, target_id)["revision"]

    def event_of(records, event_type, predicate):
        for record in records:
            event = from_kafka(key=record.key, value=record.value, headers=record.headers)
            if event.get_type() == event_type and predicate(event.get_data()):
                return record, event
        return None

    progress_records = asyncio.run(read_topic(kafka_bootstrap, "catalog.progress", timeout=60, until=lambda rs: bool(
        event_of(rs, PROGRESS_REPORTED, lambda data: data["report_id"] == report["id"]))))
    record, event = event_of(progress_records, PROGRESS_REPORTED, lambda data: data["report_id"] == report["id"])
    assert record.key.decode() == target_id == event.get_subject()
    reported = ProgressReported.model_validate(event.get_data())
    assert reported.commitment_id == target_id and reported.status == "implementation"
    assert reported.reported_by.agency_id == partner and reported.reported_by.role == "partner"
    assert reported.responsible_agencies == [agency["id"] for agency in target["responsible_agencies"]]
    assert reported.beneficiary_countries == target["beneficiaries"]
    assert reported.current.report_id == report["id"] and reported.current.source == "report"
    assert reported.figures == {"trainees": 12} and reported.evidence[0].url == "https://example.org/r"

    def is_new_state(data):
        # The session's broker also carries other catalogs' records of this commitment.
        return data["commitment"]["id"] == target_id and (data.get("progress") or {}).get("report_id") == report["id"]

    state_records = asyncio.run(read_topic(kafka_bootstrap, "catalog.commitments", timeout=60, until=lambda rs: bool(
        event_of(rs, COMMITMENT_PUBLISHED, is_new_state))))
    record, event = event_of(state_records, COMMITMENT_PUBLISHED, is_new_state)
    published = CommitmentPublished.model_validate(event.get_data())
    assert record.key.decode() == target_id
    assert published.progress is not None and published.progress.report_id == report["id"]
    assert published.revision == target["revision"] + 1 == revision


# -- IATI -------------------------------------------------------------------------------------------------
def test_iati_export_follows_the_reports_and_stays_valid(catalog, keys, unreported):
    target_id = unreported("pipeline")["id"]
    coordinator = keys["coordinator"]
    started = post_report(catalog, coordinator, target_id, report_body(
        "implementation", as_of=days_ago(300),
        evidence=[{"title": "Inception report", "url": "https://example.org/inception.pdf"},
                  {"title": "Letter", "reference": "L-7"}]))
    assert started.status_code == 201
    post_report(catalog, coordinator, target_id, report_body(
        "implementation", as_of=days_ago(200), evidence=[{"title": "Site photos", "url": "http://example.org/site"}]))
    closing = post_report(catalog, coordinator, target_id, report_body("closed", as_of=days_ago(30))).json()
    confirming = post_report(catalog, coordinator, target_id, report_body("closed", as_of=days_ago(10))).json()
    wrong = post_report(catalog, coordinator, target_id, report_body(
        "implementation", as_of=days_ago(250), evidence=[{"title": "Wrong", "url": "https://example.org/wrong"}]))
    post_report(catalog, coordinator, target_id, report_body(
        "implementation", as_of=days_ago(250), supersedes=wrong.json()["id"]))

    response = catalog.get("/v1/plans/caj-2006/iati.xml")
    document = etree.fromstring(response.content)
    schema = etree.XMLSchema(etree.parse(str(IATI_SCHEMA)))
    assert schema.validate(document), schema.error_log
    activity = next(a for a in document.findall("iati-activity") if a.findtext("iati-identifier").endswith(target_id))
    assert activity.find("activity-status").get("code") == "4"
    dates = {element.get("type"): element.get("iso-date") for element in activity.findall("activity-date")}
    assert dates == {"1": "2006-06-05", "2": days_ago(300), "4": days_ago(30)}
    assert closing["as_of"] == days_ago(30) and confirming["status"] == "closed"
    latest = datetime.fromisoformat(reports_of(catalog, target_id)[0]["reported_at"])
    assert activity.get("last-updated-datetime") == latest.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    links = {link.get("url"): link for link in activity.findall("document-link")
             if not link.get("url").endswith("/v1/plans/caj-2006/source")}
    assert set(links) == {"https://example.org/inception.pdf", "http://example.org/site"}, \
        "each counted report's URLs, none from a superseded report, no reference without a URL"
    pdf = links["https://example.org/inception.pdf"]
    assert pdf.get("format") == "application/pdf" and pdf.find("category").get("code") == "A07"
    assert pdf.findtext("title/narrative") == "Inception report"
    assert links["http://example.org/site"].get("format") == "text/html"
    # Not reported on: as the text reads, and no actual dates.
    untouched = next(a for a in document.findall("iati-activity")
                     if a.findtext("iati-identifier").endswith("caj-2006-2-1-04"))
    assert {e.get("type") for e in untouched.findall("activity-date")} == {"1"}


def test_openapi_documents_the_progress_operations(catalog):
    document = catalog.get("/openapi.json").json()
    post = document["paths"]["/v1/commitments/{commitment_id}/progress"]["post"]
    assert {"201", "401", "403", "404", "409", "413", "422"} <= set(post["responses"])
    assert post["security"]
    listed = document["paths"]["/v1/commitments"]["get"]
    assert {"status", "stale"} <= {parameter["name"] for parameter in listed["parameters"]}
    assert json.dumps(document).count("CurrentProgress") >= 1
