"""Test fixtures: a real Kafka broker per test session, and real databases.

- Kafka: `KAFKA_BOOTSTRAP_SERVERS` if set, else a broker started by
  deploy/kafka/kafka.sh on free ports with a fresh data dir.
- Databases: every test that takes `database_url` runs on SQLite, and also on
  PostgreSQL when `TEST_POSTGRES_URL` names a server (each test gets a fresh
  database there).
"""

import os
import socket
import subprocess
import time
import uuid
import warnings
from pathlib import Path

import pytest
import sqlalchemy

from shared.settings import REPO_ROOT

KAFKA_SCRIPT = REPO_ROOT / "deploy" / "kafka" / "kafka.sh"
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class KafkaBroker:
    """A broker of our own, started and stopped with the project's script."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.controller_port = free_port()
        self.data_dir = data_dir
        self.bootstrap_servers = f"127.0.0.1:{self.port}"

    def _run(self, command: str, **extra: str) -> None:
        env = dict(
            os.environ,
            KAFKA_PORT=str(self.port),
            KAFKA_CONTROLLER_PORT=str(self.controller_port),
            KAFKA_DATA_DIR=str(self.data_dir),
            **extra,
        )
        subprocess.run(["bash", str(KAFKA_SCRIPT), command], env=env, check=True, timeout=600)

    def start(self, *, fresh: bool = False) -> None:
        self._run("start", **({"KAFKA_FRESH": "1"} if fresh else {}))

    def stop(self) -> None:
        self._run("stop")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory) -> str:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    broker.start(fresh=True)
    try:
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture
def own_kafka_broker(tmp_path):
    """A broker only this test uses, for tests that stop and restart it."""
    broker = KafkaBroker(tmp_path / "kafka")
    broker.start(fresh=True)
    try:
        yield broker
    finally:
        broker.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "postgres_database_url" in metafunc.fixturenames:
        metafunc.parametrize("database_backend", ["postgresql"], scope="function")
    elif "database_url" in metafunc.fixturenames:
        backends = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])
        metafunc.parametrize("database_backend", backends, scope="function")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of PostgreSQL-only behaviour run only when a server is given;
    they are deselected (and said so), never counted as skipped passes."""
    if POSTGRES_URL:
        return
    selected = [item for item in items if "postgres_database_url" not in getattr(item, "fixturenames", ())]
    deselected = [item for item in items if item not in selected]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


def pytest_report_header(config: pytest.Config) -> str:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "a broker started for this session"
    postgres = "TEST_POSTGRES_URL set: database tests also run on PostgreSQL" if POSTGRES_URL else (
        "TEST_POSTGRES_URL not set: SQLite only, PostgreSQL-only tests deselected"
    )
    return f"kafka: {kafka}; {postgres}"


@pytest.fixture
def postgres_database_url(database_url: str) -> str:
    return database_url


@pytest.fixture
def database_url(database_backend: str, tmp_path) -> str:
    """An empty database on the given backend, dropped afterwards."""
    if database_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite3'}"
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
    warnings.warn(f"could not drop test database {name}: {last_error}")


@pytest.fixture
def topic_name() -> str:
    """A topic name no other test uses."""
    return f"test.{uuid.uuid4().hex[:10]}"
