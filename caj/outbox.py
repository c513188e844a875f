"""Outbox rows the relay set aside, read from (and put back into) each
service's own database."""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlmodel import Session

from shared.db import is_sqlite, make_engine
from shared.messaging_models import as_utc
from shared.outbox import put_back_to_pending, set_aside_rows


class NoDatabase(LookupError):
    """The service has no database yet (never migrated here)."""


@dataclass(frozen=True)
class SetAsideRow:
    id: int
    service: str
    topic: str
    event_type: str
    event_id: str
    message_key: str | None
    attempts: int
    reason: str | None
    created_at: datetime
    set_aside_at: datetime

    def as_json(self) -> dict:
        return {
            "id": self.id, "service": self.service, "topic": self.topic, "event_type": self.event_type,
            "event_id": self.event_id, "message_key": self.message_key, "attempts": self.attempts,
            "reason": self.reason, "created_at": self.created_at.isoformat(),
            "set_aside_at": self.set_aside_at.isoformat(),
        }


def _engine(database_url: str):
    # Connecting to a missing SQLite file would create an empty one.
    if is_sqlite(database_url):
        database = make_url(database_url).database
        if database and database != ":memory:" and not Path(database).exists():
            raise NoDatabase(f"no database at {database}")
    return make_engine(database_url)


def failed(service: str, database_url: str) -> list[SetAsideRow]:
    engine = _engine(database_url)
    try:
        with Session(engine) as session:
            rows = []
            for row in set_aside_rows(session):
                assert row.id is not None and row.set_aside_at is not None  # stored, and set aside
                rows.append(SetAsideRow(
                    id=row.id, service=service, topic=row.topic, event_type=row.event_type, event_id=row.event_id,
                    message_key=row.message_key, attempts=row.attempts, reason=row.last_error,
                    created_at=as_utc(row.created_at), set_aside_at=as_utc(row.set_aside_at),
                ))
            return rows
    finally:
        engine.dispose()


def retry(database_url: str, row_id: int) -> bool:
    """Put a set-aside row back to pending; False if there is none with that id."""
    engine = _engine(database_url)
    try:
        with Session(engine) as session:
            found = put_back_to_pending(session, row_id)
            session.commit()
            return found
    finally:
        engine.dispose()
