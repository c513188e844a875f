"""Test databases: SQLite always, PostgreSQL too when `TEST_POSTGRES_URL`
names a server (each use gets a fresh database there, dropped afterwards)."""

import contextlib
import os
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL")


def database_backends() -> list[str]:
    """For fixtures of wider scope that parametrize themselves."""
    return ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])


@contextlib.contextmanager
def empty_database(backend: str, directory: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'test.sqlite3'}"
        return
    name = f"caj_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = sqlalchemy.engine.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        _drop_database(admin, name)
        admin.dispose()


def _drop_database(admin, name: str) -> None:
    """Cleanup: a few tries (a backend may still be leaving), then a warning
    rather than a failure of the test that used the database."""
    for attempt in range(5):
        try:
            with admin.connect() as connection:
                connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            return
        except sqlalchemy.exc.DBAPIError as error:
            last_error = error
            time.sleep(0.5 * (attempt + 1))
    warnings.warn(f"could not drop test database {name}: {last_error}", stacklevel=2)
