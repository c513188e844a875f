"""Run a service as a real uvicorn process, as production does."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from shared.migrations import upgrade
from shared.settings import REPO_ROOT
from tests.conftest import free_port

ENV_PREFIX = {"catalog_service": "CATALOG", "requests_service": "REQUESTS", "notifications_service": "NOTIFICATIONS",
              "console_service": "CONSOLE"}


class ServiceProcess:
    def __init__(self, package: str, *, database_url: str, kafka_bootstrap: str, log_path: Path, **settings: str):
        self.package = package
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.log_path = log_path
        prefix = ENV_PREFIX[package]
        self.env = dict(
            os.environ,
            **{
                f"{prefix}_DATABASE_URL": database_url,
                f"{prefix}_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                f"{prefix}_PORT": str(self.port),
                f"{prefix}_OUTBOX_POLL_INTERVAL_SECONDS": "0.5",
            },
            **{f"{prefix}_{name.upper()}": value for name, value in settings.items()},
        )
        self.process: subprocess.Popen | None = None

    def start(self, *, migrate: bool = True) -> "ServiceProcess":
        if migrate:
            upgrade(self.package, self.database_url)
        # The child gets its own copy of the descriptor; this process need not keep the file open.
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", f"{self.package}.main:app",
                 "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        return self

    def wait_status(self, path: str, status: int, timeout: float) -> httpx.Response:
        deadline = time.monotonic() + timeout
        last: httpx.Response | str = "no answer"
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise AssertionError(f"{self.package} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                last = httpx.get(self.base_url + path, timeout=5)
                if last.status_code == status:
                    return last
            except httpx.HTTPError as error:
                last = repr(error)
            time.sleep(0.3)
        detail = last.text if isinstance(last, httpx.Response) else last
        raise AssertionError(f"{path} never answered {status} in {timeout}s; last: {detail}\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no shutdown of any kind, as when a machine dies."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def ready_services(packages: Sequence[str], *, kafka_bootstrap: str, directory: Path,
                   **settings: str) -> Iterator[dict[str, ServiceProcess]]:
    """The services, each on its own SQLite file in `directory`, once all
    answer /readyz; stopped afterwards."""
    services = {
        package: ServiceProcess(package, database_url=f"sqlite:///{directory / (package + '.sqlite3')}",
                                kafka_bootstrap=kafka_bootstrap, log_path=directory / f"{package}.log",
                                **settings).start()
        for package in packages
    }
    try:
        for service in services.values():
            service.wait_status("/readyz", 200, timeout=120)
        yield services
    finally:
        for service in services.values():
            service.stop()
