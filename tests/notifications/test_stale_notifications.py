"""Stale requests and stale commitments reach the responsible agencies and
the coordinators, and no one else."""

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from notifications_service.routing import load_rules, recipients_for
from requests_service.config import RequestsSettings
from requests_service.staleness import check_stale_requests
from shared.contracts.catalog import CATALOG_SOURCE, COMMITMENT_STALE, CommitmentStale
from shared.contracts.requests import REQUEST_STALE
from shared.db import make_engine
from shared.events import new_event, to_kafka
from shared.topics import CATALOG_PROGRESS
from tests.kafka_helpers import produce_raw, started_writer
from tests.notifications.test_notifications_api import notifications, wait_for_items  # noqa: F401
from tests.requests.conftest import auth
from tests.requests.test_offers_read_model import BORDER


def test_stale_events_are_routed_to_the_responsible_agencies_and_the_coordinators():
    rules = load_rules()
    data = {"request_id": "r-1", "agency_id": "tj-border-service", "country": "TJ",
            "responsible_agencies": ["jp-mofa", "jica"], "required_countries": ["KZ"]}
    nobody_by_country = lambda country: pytest.fail("stale events are not routed by country")  # noqa: E731
    for event_type in (REQUEST_STALE, COMMITMENT_STALE):
        assert recipients_for(rules, event_type, data, nobody_by_country) == ["jp-mofa", "jica", "coordinators"]


def test_a_stale_request_reaches_the_responsible_agency_and_the_coordinators(stack, notifications, keys):  # noqa: F811
    requester = keys.make("partner", country="TJ", agency="tj-stale-requester")
    coordinator = keys.make("coordinator")
    responsible = BORDER.responsible_agencies[0]
    responsible_key = keys.make("partner", country=responsible.country, agency=responsible.id)
    with httpx.Client(base_url=stack.base_url, timeout=30) as requests_api, \
            httpx.Client(base_url=notifications.base_url, timeout=30) as api:
        wait_for_items(requests_api, "/v1/requests", requester, lambda items: True)
        created = requests_api.post("/v1/requests", headers=auth(requester), json={
            "commitment_id": BORDER.id, "title": "Still waiting", "description": "Posts on the Pyanj."})
        assert created.status_code == 201, created.text
        request_id = created.json()["id"]

        # A replica's check, a staleness period later by its clock, on the
        # running service's database: the service's relay publishes what it staged.
        stale_after = timedelta(days=RequestsSettings().stale_after_days)
        announced = asyncio.run(check_in(stack.database_url, now=datetime.now(UTC) + stale_after + timedelta(1)))
        assert [event.request_id for event in announced] == [request_id]
        assert responsible.id in announced[0].responsible_agencies

        def stale_about_this(items):
            return [i for i in items if i["event_type"] == REQUEST_STALE and i["payload"]["request_id"] == request_id]

        agency_items = stale_about_this(wait_for_items(api, "/v1/notifications", responsible_key, stale_about_this))
        assert [item["recipient"] for item in agency_items] == [responsible.id]
        assert agency_items[0]["payload"]["period"] == 1 and agency_items[0]["payload"]["status"] == "submitted"
        coordinator_items = stale_about_this(wait_for_items(api, "/v1/inbox", coordinator, stale_about_this))
        assert [item["recipient"] for item in coordinator_items] == ["coordinators"]
        # One event's notifications are made together: the requester's would be there by now.
        requester_items = api.get("/v1/notifications", headers=auth(requester), params={"limit": 100}).json()
        assert not stale_about_this(requester_items["items"]), "the requesting agency is not told"


async def check_in(database_url: str, *, now: datetime):
    engine = make_engine(database_url)
    try:
        async with started_writer(engine) as writer:
            return await check_stale_requests(writer=writer, read_engine=engine, now=now,
                                              stale_after=timedelta(days=RequestsSettings().stale_after_days))
    finally:
        engine.dispose()


def test_a_stale_commitment_reaches_the_responsible_agency_and_the_coordinators(notifications, keys,  # noqa: F811
                                                                                kafka_bootstrap):
    """The event as the catalog publishes it on catalog.progress (its checker
    is the catalog's), through the notifications service's real consumer."""
    coordinator = keys.make("coordinator")
    responsible = BORDER.responsible_agencies[-1]
    responsible_key = keys.make("partner", country=responsible.country, agency=responsible.id)
    stale_since = datetime(2027, 9, 1, tzinfo=UTC)
    data = CommitmentStale(commitment_id=BORDER.id, plan_id=BORDER.plan_id, pillar=BORDER.pillar.number,
                           status="implementation", last_reported_at=stale_since - timedelta(days=180),
                           stale_since=stale_since, period=1,
                           responsible_agencies=[agency.id for agency in BORDER.responsible_agencies])
    event = new_event(type=COMMITMENT_STALE, source=CATALOG_SOURCE, subject=BORDER.id,
                      data=data.model_dump(mode="json"))
    record = to_kafka(event, key=BORDER.id)
    asyncio.run(produce_raw(kafka_bootstrap, CATALOG_PROGRESS.name, value=record.value, key=record.key,
                            headers=record.headers))

    def this_event(items):
        return [item for item in items if item["event_id"] == event.get_id()]

    with httpx.Client(base_url=notifications.base_url, timeout=30) as api:
        agency_items = this_event(wait_for_items(api, "/v1/notifications", responsible_key, this_event))
        assert [item["recipient"] for item in agency_items] == [responsible.id]
        assert agency_items[0]["payload"]["stale_since"].startswith("2027-09-01")
        coordinator_items = this_event(wait_for_items(api, "/v1/inbox", coordinator, this_event))
        assert [item["recipient"] for item in coordinator_items] == ["coordinators"]
