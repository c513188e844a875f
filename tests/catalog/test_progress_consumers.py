"""The records a progress report publishes, as the outbox holds them, are
taken by the other services' consumers of catalog.commitments and
catalog.progress: the requests offers read model moves to the new revision,
notifications routes the report and still learns agencies from the state."""

from datetime import UTC, date, datetime

from sqlmodel import Session, select

from catalog_service.plan_files import DEFAULT_PLAN_FILES, load_plan_file
from catalog_service.reporting import ProgressCreate, new_report_id, record_report
from catalog_service.sync import sync_plans
from notifications_service.consumers import make_handler
from notifications_service.models import NotificationRow
from notifications_service.routing import load_rules
from requests_service.consumers import handle_catalog_event
from requests_service.models import OfferRow
from shared.contracts.catalog import COMMITMENT_PUBLISHED, PROGRESS_REPORTED
from shared.db import make_engine
from shared.events import from_json
from shared.identity import Principal
from shared.messaging_models import OutboxMessage
from shared.migrations import upgrade

BORDER = "caj-2006-2-1-04"
COORDINATOR = Principal(key_id="0" * 16, role="coordinator", agency_id=None, country=None)


def staged_events(engine, event_type: str):
    with Session(engine) as session:
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.event_type == event_type)
                            .order_by(OutboxMessage.id)).all()
    return [from_json(row.envelope) for row in rows]


def test_the_other_services_take_the_records_of_a_report(database_url, tmp_path):
    upgrade("catalog_service", database_url)
    catalog = make_engine(database_url)
    requests_url, notifications_url = (f"sqlite:///{tmp_path / name}" for name in ("r.sqlite3", "n.sqlite3"))
    upgrade("requests_service", requests_url)
    upgrade("notifications_service", notifications_url)
    requests_db, notifications_db = make_engine(requests_url), make_engine(notifications_url)
    try:
        sync_plans(catalog, [load_plan_file(DEFAULT_PLAN_FILES[0])])
        with Session(catalog) as session:
            record_report(session, principal=COORDINATOR, commitment_id=BORDER, report_id=new_report_id(),
                          now=datetime.now(UTC), body=ProgressCreate(
                              status="implementation", as_of=date(2026, 11, 1), summary="Border posts built."))
            session.commit()
        states = [event for event in staged_events(catalog, COMMITMENT_PUBLISHED) if event.get_subject() == BORDER]
        assert [event.get_data()["revision"] for event in states] == [1, 2]
        (reported,) = staged_events(catalog, PROGRESS_REPORTED)

        with Session(requests_db) as session:
            assert [handle_catalog_event(session, event) for event in states] == ["processed", "processed"]
            assert handle_catalog_event(session, reported) == "ignored"  # not a topic it reads; unknown type
            session.commit()
            assert session.get(OfferRow, BORDER).revision == 2

        handler = make_handler(load_rules(), lambda country: [])
        with Session(notifications_db) as session:
            assert handler.handle_many(session, [*states, reported]) == ["processed", "processed", "processed"]
            session.commit()
            recipients = session.exec(select(NotificationRow.recipient)
                                      .where(NotificationRow.event_type == PROGRESS_REPORTED)).all()
        responsible = reported.get_data()["responsible_agencies"]
        assert set(responsible) | {"coordinators"} <= set(recipients)
    finally:
        for engine in (catalog, requests_db, notifications_db):
            engine.dispose()
