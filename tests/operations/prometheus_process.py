"""A real Prometheus (Debian's binary) on 127.0.0.1, a free port and a
temporary directory, for as long as a test needs it."""

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml

from caj import prometheus
from tests.conftest import free_port


class PrometheusProcess:
    def __init__(self, directory: Path, targets: dict[str, str], *, leave_out: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.config_file = directory / "prometheus.yml"
        config = prometheus.local_config(targets, scrape_interval="1s", leave_out=leave_out)
        self.config_file.write_text(yaml.safe_dump(config))
        self.log_path = directory / "prometheus.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "PrometheusProcess":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                prometheus.command(self.config_file, self.directory / "data", f"127.0.0.1:{self.port}"),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"prometheus exited:\n{self.log_tail()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + "/-/ready", timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready in {timeout}s:\n{self.log_tail()}")

    def query(self, expression: str) -> dict:
        """The API's answer to an instant query, whatever its status."""
        return httpx.get(self.base_url + "/api/v1/query", params={"query": expression}, timeout=30).json()

    def api(self, path: str) -> dict:
        return httpx.get(self.base_url + "/api/v1/" + path, timeout=30).json()

    def wait_for(self, expression: str, timeout: float = 60) -> list[dict]:
        """The query's result once it has data."""
        deadline = time.monotonic() + timeout
        answer: dict = {}
        while time.monotonic() < deadline:
            answer = self.query(expression)
            if answer.get("status") == "success" and answer["data"]["result"]:
                return answer["data"]["result"]
            time.sleep(0.5)
        raise AssertionError(f"{expression} returned no data in {timeout}s; last answer: {answer}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def running_prometheus(directory: Path, targets: dict[str, str], *,
                       leave_out: tuple[str, ...] = ()) -> Iterator[PrometheusProcess]:
    server = PrometheusProcess(directory, targets, leave_out=leave_out).start()
    try:
        yield server
    finally:
        server.stop()
