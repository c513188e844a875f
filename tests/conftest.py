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
import uuid
from pathlib import Path

import pytest

from shared.settings import REPO_ROOT
from tests.databases import POSTGRES_URL, database_backends, empty_database

KAFKA_SCRIPT = REPO_ROOT / "deploy" / "kafka" / "kafka.sh"


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
        metafunc.parametrize("database_backend", database_backends(), scope="function")


# The team's reference copies (source text, IATI schemas) sit beside a
# working checkout, not inside it: the repo carries its own copies, pinned by
# hash, and compares them with the reference only where it is there.
REFERENCE_COPY = REPO_ROOT.parent / "shared"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of PostgreSQL-only behaviour run only when a server is given,
    and comparisons with the reference copy only where it exists; otherwise
    they are deselected (and said so), never counted as skipped passes."""
    def runnable(item: pytest.Item) -> bool:
        if not POSTGRES_URL and "postgres_database_url" in getattr(item, "fixturenames", ()):
            return False
        return REFERENCE_COPY.is_dir() or item.get_closest_marker("needs_reference_copy") is None

    selected = [item for item in items if runnable(item)]
    deselected = [item for item in items if item not in selected]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


def pytest_report_header(config: pytest.Config) -> list[str]:
    kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "a broker started for this session"
    postgres = "TEST_POSTGRES_URL set: database tests also run on PostgreSQL" if POSTGRES_URL else (
        "TEST_POSTGRES_URL not set: SQLite only, PostgreSQL-only tests deselected"
    )
    reference = (f"reference copy at {REFERENCE_COPY}: compared with the repo's copies" if REFERENCE_COPY.is_dir()
                 else f"no reference copy at {REFERENCE_COPY}: its comparisons deselected "
                      "(pinned hashes still checked)")
    return [f"kafka: {kafka}; {postgres}", reference]


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    # `-q` hides the header: what was deselected, and why, is said again at the end.
    if not REFERENCE_COPY.is_dir() or not POSTGRES_URL:
        for line in pytest_report_header(config):
            if "deselected" in line:
                terminalreporter.write_line(line)


@pytest.fixture
def postgres_database_url(database_url: str) -> str:
    return database_url


@pytest.fixture
def database_url(database_backend: str, tmp_path) -> str:
    """An empty database on the given backend, dropped afterwards."""
    with empty_database(database_backend, tmp_path) as url:
        yield url


@pytest.fixture
def topic_name() -> str:
    """A topic name no other test uses."""
    return f"test.{uuid.uuid4().hex[:10]}"
