"""The catalog API, served by a real catalog process over HTTP."""

import hashlib
import json
from pathlib import Path

import httpx
import pytest
from lxml import etree

from catalog_service.plan_files import DEFAULT_PLAN_FILES
from shared.settings import REPO_ROOT
from tests.service_process import ServiceProcess

SYNTHETIC = Path(__file__).parent / "fixtures" / "synthetic-plan-2030.yaml"
# The published IATI 2.03 schemas, carried here so the check runs on any
# checkout. Their hashes are pinned; where the team's reference copy sits
# beside the checkout (../shared), the copy is also compared with it.
IATI_SCHEMA = Path(__file__).parent / "iati-2.03" / "iati-activities-schema.xsd"
IATI_SCHEMA_SHA256 = {
    "iati-activities-schema.xsd": "62c91a66c82ee26864d5e6c3f4bd6358de14d3aec69bc649db85da9f9a0792bc",
    "iati-common.xsd": "322692e4ea1f4434b154855f381eb4bd972aaa2e1349dfaf9578b775ad6c9c6b",
    "xml.xsd": "61960fb3131e38022caad5360e2f33a3382578ab3c80cd58bd74320ede61b20c",
}
SHARED_IATI = REPO_ROOT.parent / "shared" / "iati-2.03"


@pytest.fixture(scope="module")
def catalog(kafka_bootstrap, tmp_path_factory):
    directory = tmp_path_factory.mktemp("catalog-api")
    service = ServiceProcess(
        "catalog_service",
        database_url=f"sqlite:///{directory / 'catalog.sqlite3'}",
        kafka_bootstrap=kafka_bootstrap,
        log_path=directory / "catalog.log",
        plan_files=json.dumps([str(DEFAULT_PLAN_FILES[0]), str(SYNTHETIC)]),
    ).start()
    try:
        service.wait_status("/readyz", 200, timeout=120)
        with httpx.Client(base_url=service.base_url, timeout=10) as client:
            yield client
    finally:
        service.stop()


def ids(response: httpx.Response) -> list[str]:
    return [item["id"] for item in response.json()["items"]]


def test_plans_are_listed_with_counts(catalog):
    plans = catalog.get("/v1/plans").json()["items"]
    assert [plan["id"] for plan in plans] == ["caj-2006", "synthetic-2030"]
    plan = catalog.get("/v1/plans/caj-2006").json()
    # 111: the plan's entries, with the review at SOM and four split sentences (see test_plan_data.test_counts).
    assert plan["commitments"] == 111
    assert sum(plan["commitments_by_condition"].values()) == 111
    assert [pillar["name"] for pillar in plan["pillars"]] == [
        "Political dialogue", "Intra-regional cooperation", "Business promotion", "Intellectual dialogue",
        "Cultural and human exchanges",
    ]


def test_every_commitment_text_is_at_its_offsets_in_the_served_source(catalog):
    source = catalog.get("/v1/plans/caj-2006/source")
    assert source.headers["content-type"].startswith("text/plain")
    text = source.text
    offset, seen = 0, 0
    while True:
        page = catalog.get("/v1/commitments", params={"plan_id": "caj-2006", "limit": 100, "offset": offset}).json()
        for item in page["items"]:
            assert text[item["source"]["start"]:item["source"]["end"]] == item["text"]
            seen += 1
        if not page["next"]:
            break
        offset += 100
    assert seen == 111


# The parts of the sentences split into pledges tracked one by one (see test_plan_data.py).
SPLIT_PARTS = {"caj-2006-2-6-06", "caj-2006-2-6-09", "caj-2006-2-7-08", "caj-2006-2-7-04", "caj-2006-2-9-05",
               "caj-2006-2-9-06", "caj-2006-5-0-13", "caj-2006-5-0-05"}


def test_a_split_part_publishes_its_whole_sentence_verbatim_in_the_plan(catalog):
    source = catalog.get("/v1/plans/caj-2006/source").text
    items = catalog.get("/v1/commitments", params={"plan_id": "caj-2006", "limit": 100}).json()["items"]
    items += catalog.get("/v1/commitments", params={"plan_id": "caj-2006", "limit": 100, "offset": 100}).json()["items"]
    split = {item["id"]: item for item in items if item["part_of"] is not None}
    assert set(split) == SPLIT_PARTS
    for item in split.values():
        sentence = item["part_of"]
        assert source[sentence["start"]:sentence["end"]] == sentence["text"], "verbatim at its offsets"
        assert sentence["start"] <= item["source"]["start"] and item["source"]["end"] <= sentence["end"]
        assert item["text"] in sentence["text"] and item["text"] != sentence["text"]
        assert sentence["text"].endswith("."), "the whole sentence, to its full stop"
    # The two parts of one sentence carry the same sentence.
    assert split["caj-2006-2-6-06"]["part_of"] == split["caj-2006-2-6-09"]["part_of"]
    assert split["caj-2006-2-6-09"]["text"] == "mudslide prevention measures for Uzbekistan."
    assert split["caj-2006-2-6-09"]["part_of"]["text"].startswith("There are also plans to help formulate")
    assert catalog.get("/v1/commitments/caj-2006-2-6-09").json()["part_of"] == split["caj-2006-2-6-09"]["part_of"]
    # A commitment that is a whole sentence has none.
    assert catalog.get("/v1/commitments/caj-2006-2-1-04").json()["part_of"] is None


def test_border_control_offer_is_requestable_only_by_tajikistan_and_afghanistan(catalog):
    commitment = catalog.get("/v1/commitments/caj-2006-2-1-04").json()
    assert commitment["condition"]["type"] == "on_request"
    assert commitment["requestable_by"] == ["TJ", "AF"]
    assert commitment["revision"] == 1 and commitment["plan_id"] == "caj-2006"
    by_af = ids(catalog.get("/v1/commitments", params={"requestable_by": "AF"}))
    assert by_af == ["caj-2006-2-1-04"]
    by_kz = ids(catalog.get("/v1/commitments", params={"requestable_by": "KZ", "plan_id": "caj-2006"}))
    assert "caj-2006-2-1-04" not in by_kz and "caj-2006-2-1-05" in by_kz


@pytest.mark.parametrize(
    ("params", "check"),
    [
        ({"pillar": 3}, lambda item: item["pillar"]["number"] == 3),
        ({"section": "2(2)"}, lambda item: item["section_code"] == "2(2)"),
        ({"section": "2(2) Clearance of anti-personnel mines"}, lambda item: item["section_code"] == "2(2)"),
        ({"actor": "KZ"}, lambda item: "KZ" in item["actors"]),
        ({"beneficiary": "AF"}, lambda item: "AF" in item["beneficiaries"]),
        ({"condition": "joint_interest"}, lambda item: item["condition"]["type"] == "joint_interest"),
        ({"kind": "achievement"}, lambda item: item["kind"] == "achievement"),
        ({"sector": "15250"}, lambda item: "15250" in item["sectors"]),
        ({"q": "ARAL SEA"}, lambda item: "aral sea" in (item["text"] + item["section"]).lower()),
    ],
)
def test_filters(catalog, params, check):
    response = catalog.get("/v1/commitments", params=params | {"limit": 100})
    assert response.status_code == 200
    items = response.json()["items"]
    assert items, f"{params} matched nothing"
    assert all(check(item) for item in items)
    assert response.json()["total"] == len(items)


def test_joint_interest_offer_requires_all_four_central_asian_countries(catalog):
    items = catalog.get("/v1/commitments",
                        params={"condition": "joint_interest", "plan_id": "caj-2006"}).json()["items"]
    assert [item["id"] for item in items] == ["caj-2006-3-0-09"]
    assert items[0]["condition"]["required_countries"] == ["KZ", "KG", "TJ", "UZ"]


def test_pagination_walks_every_commitment_once(catalog):
    first = catalog.get("/v1/commitments", params={"limit": 50}).json()
    # The 2006 plan's 111 entries and the synthetic plan's 3.
    assert first["total"] == 114 and len(first["items"]) == 50 and first["offset"] == 0
    second = catalog.get(first["next"]).json()
    third = catalog.get(second["next"]).json()
    assert third["next"] is None and len(third["items"]) == 14
    all_ids = [item["id"] for page in (first, second, third) for item in page["items"]]
    assert len(set(all_ids)) == 114


def test_etag_and_if_none_match(catalog):
    response = catalog.get("/v1/commitments", params={"pillar": 2})
    etag = response.headers["etag"]
    assert "max-age" in response.headers["cache-control"]
    again = catalog.get("/v1/commitments", params={"pillar": 2}, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    other_query = catalog.get("/v1/commitments", params={"pillar": 3}, headers={"If-None-Match": etag})
    assert other_query.status_code == 200
    single = catalog.get("/v1/commitments/caj-2006-2-2-04")
    revalidated = catalog.get("/v1/commitments/caj-2006-2-2-04",
                              headers={"If-None-Match": f'W/{single.headers["etag"]}'})
    assert revalidated.status_code == 304


@pytest.mark.parametrize(
    ("path", "params", "status", "reason"),
    [
        ("/v1/commitments/caj-2006-9-9-99", {}, 404, "commitment_not_found"),
        ("/v1/commitments/NOT-AN-ID", {}, 404, "commitment_not_found"),
        ("/v1/plans/caj-1999", {}, 404, "plan_not_found"),
        ("/v1/plans/caj-1999/iati.xml", {}, 404, "plan_not_found"),
        ("/v1/commitments", {"pillar": 9}, 422, "validation_failed"),
        ("/v1/commitments", {"beneficiary": "XX"}, 422, "validation_failed"),
        ("/v1/commitments", {"condition": "if_asked"}, 422, "validation_failed"),
        ("/v1/commitments", {"limit": 101}, 422, "validation_failed"),
        ("/v1/commitments", {"sector": "152"}, 422, "validation_failed"),
        ("/v1/commitments", {"pilar": 2}, 422, "unknown_parameter"),
    ],
)
def test_errors_are_problem_json_with_a_reason(catalog, path, params, status, reason):
    response = catalog.get(path, params=params)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["reason"] == reason
    assert response.json()["status"] == status


def test_iati_export_validates_against_the_iati_2_03_schema(catalog):
    schema = etree.XMLSchema(etree.parse(str(IATI_SCHEMA)))
    response = catalog.get("/v1/plans/caj-2006/iati.xml")
    assert response.headers["content-type"].startswith("application/xml")
    document = etree.fromstring(response.content)
    assert schema.validate(document), schema.error_log
    activities = document.findall("iati-activity")
    assert len(activities) == 111
    ns = {"caj": "https://caj-tracker.org/ns/iati-extension/1"}
    border = next(a for a in activities if a.findtext("iati-identifier").endswith("caj-2006-2-1-04"))
    assert [c.get("code") for c in border.findall("recipient-country")] == ["TJ", "AF"]
    trigger = border.find("caj:activation-trigger", ns)
    assert trigger.get("type") == "on_request"
    assert [c.get("code") for c in trigger.findall("caj:eligible-country", ns)] == ["TJ", "AF"]
    assert border.find("document-link").get("url").endswith("/v1/plans/caj-2006/source")
    afforestation = next(a for a in activities if a.findtext("iati-identifier").endswith("caj-2006-2-5-08"))
    assert afforestation.find("conditions").get("attached") == "1"
    assert afforestation.find("conditions/condition").get("type") == "2"  # performance


def test_catalog_metrics(catalog):
    catalog.get("/v1/commitments/caj-2006-2-1-04")
    metrics = catalog.get("/metrics").text
    assert 'caj_catalog_commitments{condition_type="on_request",pillar="2"} 8.0' in metrics
    assert 'caj_catalog_commitments{condition_type="joint_interest",pillar="3"} 1.0' in metrics
    assert 'route="/v1/commitments/{commitment_id}"' in metrics


def test_remembered_pages_match_fresh_ones_and_refusals_are_never_remembered(catalog):
    first = catalog.get("/v1/commitments?beneficiary=TJ&limit=5")
    again = catalog.get("/v1/commitments?beneficiary=TJ&limit=5")
    assert first.content == again.content and first.headers["etag"] == again.headers["etag"]
    other = catalog.get("/v1/commitments?beneficiary=TJ&limit=5&offset=5")
    assert ids(other) and set(ids(other)).isdisjoint(ids(first))
    for _ in range(2):
        assert catalog.get("/v1/commitments?pillar=9").status_code == 422


def test_page_cache_is_bounded():
    from catalog_service.snapshot import CatalogSnapshot

    snapshot = CatalogSnapshot(plans={}, source_texts={}, commitments=[], by_id={}, agencies=[], fingerprint="f",
                               page_cache_size=3)
    for number in range(5):
        snapshot.remember_page(str(number).encode(), (b"{}", '"e"'))
    assert list(snapshot.page_cache) == [b"2", b"3", b"4"]


def test_until_the_catalog_is_loaded_its_routes_answer_503_and_the_document_says_so(tmp_path):
    from fastapi.testclient import TestClient

    from catalog_service.config import CatalogSettings
    from catalog_service.main import create_app

    app = create_app(CatalogSettings(database_url=f"sqlite:///{tmp_path / 'catalog.sqlite3'}", log_json=False))
    client = TestClient(app)  # not started: the snapshot never loads
    paths = {path: operations for path, operations in client.get("/openapi.json").json()["paths"].items()
             if path.startswith("/v1/")}
    assert len(paths) == 12  # the review meetings' three included
    for path, operations in paths.items():
        documented = operations["get"]["responses"].get("503")
        assert documented and "application/problem+json" in documented["content"], path

        response = client.get(path.format(plan_id="caj-2006", commitment_id="caj-2006-2-1-04", report_id="r",
                                          review_id="caj-2006-foreign-ministers-3"))
        assert response.status_code == 503, path
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["reason"] == "catalog_loading"
        assert int(response.headers["retry-after"]) >= 1


@pytest.mark.parametrize("name", sorted(IATI_SCHEMA_SHA256))
def test_the_schema_copy_is_the_published_one(name):
    assert hashlib.sha256((IATI_SCHEMA.parent / name).read_bytes()).hexdigest() == IATI_SCHEMA_SHA256[name]


@pytest.mark.needs_reference_copy
@pytest.mark.parametrize("name", sorted(IATI_SCHEMA_SHA256))
def test_the_schema_copy_is_the_reference_one(name):
    assert (IATI_SCHEMA.parent / name).read_bytes() == (SHARED_IATI / name).read_bytes(), name
