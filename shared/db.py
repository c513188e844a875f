"""Database engines and sessions: SQLite (WAL) by default, PostgreSQL by URL."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

from sqlalchemy import Table, event, inspect
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine, text


def table_of(model: type[SQLModel]) -> Table:
    """The Core table of a table model, for statements built once and run
    many times (SQLModel does not declare `__table__` for type checkers)."""
    return cast(Table, inspect(model).local_table)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(
    url: str, *, sqlite_synchronous: str = "FULL", sqlite_begin: str = "IMMEDIATE", echo: bool = False
) -> Engine:
    """`sqlite_begin`: IMMEDIATE takes SQLite's write lock when a transaction
    starts, so a transaction that reads then writes waits its turn instead of
    failing with SQLITE_BUSY when another writer committed in between. Engines
    used only for reading pass DEFERRED, so readers never wait for writers."""
    if is_sqlite(url):
        engine = create_engine(
            url,
            echo=echo,
            # Sessions run in FastAPI's thread pool and in the relay's worker thread.
            connect_args={"check_same_thread": False, "timeout": 30},
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
            cursor = dbapi_connection.cursor()
            # WAL lets readers run beside the single writer; busy_timeout makes
            # writers queue instead of failing with "database is locked".
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={sqlite_synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
            # Let SQLAlchemy, not the driver, start transactions (below): the
            # driver's own handling breaks SAVEPOINT and cannot BEGIN IMMEDIATE.
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection) -> None:  # noqa: ANN001
            connection.exec_driver_sql(f"BEGIN {sqlite_begin}")

        return engine
    # A database that does not answer must fail fast, not hold a pool thread for minutes.
    connect_args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20, pool_timeout=10,
                         connect_args=connect_args)


def ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def session_factory(engine: Engine) -> Callable[[], Session]:
    def new_session() -> Session:
        return Session(engine, expire_on_commit=False)

    return new_session


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
