"""Start and stop the whole local system: the Kafka broker, the three
services, the console and, when it is installed, Prometheus scraping them."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from caj import prometheus
from caj.services import PROCESSES, SERVICES, ServiceInfo
from shared import migrations
from shared.settings import DEFAULT_DATA_DIR, REPO_ROOT

KAFKA_SCRIPT = REPO_ROOT / "deploy" / "kafka" / "kafka.sh"
RUN_DIR = DEFAULT_DATA_DIR / "run"
LOG_DIR = DEFAULT_DATA_DIR / "log"
# The local stack is for development: webhook receivers there run on this
# machine, at addresses production refuses. The environment still wins.
DEVELOPMENT_SETTINGS = {"NOTIFICATIONS_WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true"}
PROMETHEUS_DIR = DEFAULT_DATA_DIR / "prometheus"
PROMETHEUS_PID = RUN_DIR / "prometheus.pid"
PROMETHEUS_ADDRESS = os.environ.get("CAJ_PROMETHEUS_ADDRESS", "127.0.0.1:9090")


def _pid_file(service: ServiceInfo) -> Path:
    return RUN_DIR / f"{service.name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_service(pid: int, service: ServiceInfo) -> bool:
    """The pid file may outlive its process (a reboot): check the command line,
    so that no stranger that got the same pid is reported or killed."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and service.app_factory in command


def running_pid(service: ServiceInfo) -> int | None:
    try:
        pid = int(_pid_file(service).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) and _is_our_service(pid, service) else None


def start_kafka(echo) -> None:
    echo("Kafka broker: starting (first run downloads the jars with Maven)...")
    subprocess.run(["bash", str(KAFKA_SCRIPT), "start"], check=True)


def stop_kafka() -> None:
    subprocess.run(["bash", str(KAFKA_SCRIPT), "stop"], check=True)


def migrate_all(echo) -> None:
    for service in SERVICES.values():
        url = service.settings().resolved_database_url()
        migrations.upgrade(service.package, url)
        echo(f"{service.name}: schema at {migrations.head_revision(service.package)}")


def start_service(service: ServiceInfo, echo) -> None:
    if (pid := running_pid(service)) is not None:
        echo(f"{service.name}: already running (pid {pid})")
        return
    settings = service.settings()
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    # The child gets its own copy of the descriptor; this process need not keep the file open.
    with open(LOG_DIR / f"{service.name}.log", "ab") as log_file:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "--factory", service.app_factory,
                "--host", settings.host, "--port", str(settings.port), "--no-access-log",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=DEVELOPMENT_SETTINGS | dict(os.environ),
            start_new_session=True,  # survives the shell that ran `make up`
            cwd=REPO_ROOT,
        )
    _pid_file(service).write_text(str(process.pid))
    echo(f"{service.name}: started (pid {process.pid}), log {LOG_DIR / (service.name + '.log')}")


def wait_ready(timeout: float, echo) -> bool:
    deadline = time.monotonic() + timeout
    pending = dict(PROCESSES)
    while pending and time.monotonic() < deadline:
        for name, service in list(pending.items()):
            settings = service.settings()
            try:
                response = httpx.get(f"http://{settings.host}:{settings.port}/readyz", timeout=3)
                if response.status_code == 200:
                    echo(f"{name}: ready at http://{settings.host}:{settings.port}")
                    del pending[name]
            except httpx.HTTPError:
                pass
            if running_pid(service) is None and name in pending:
                echo(f"{name}: process exited; see {LOG_DIR / (name + '.log')}")
                return False
        time.sleep(0.5)
    for name in pending:
        echo(f"{name}: not ready after {timeout:.0f}s; see {LOG_DIR / (name + '.log')}")
    return not pending


def stop_service(service: ServiceInfo, echo, timeout: float = 20.0) -> None:
    pid = running_pid(service)
    if pid is None:
        _pid_file(service).unlink(missing_ok=True)
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    _pid_file(service).unlink(missing_ok=True)
    echo(f"{service.name}: stopped")


# -- Prometheus ------------------------------------------------------------------------
def _prometheus_pid() -> int | None:
    """Our Prometheus: the pid file's process, if it runs with our config."""
    try:
        pid = int(PROMETHEUS_PID.read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid if f"--config.file={PROMETHEUS_DIR / 'prometheus.yml'}" in command else None


def start_prometheus(echo, timeout: float = 60.0) -> str | None:
    """Prometheus with the project's config and rules, scraping the local
    services; its URL, or None when the binary is not installed."""
    url = f"http://{PROMETHEUS_ADDRESS}"
    if (pid := _prometheus_pid()) is not None:
        echo(f"prometheus: already running (pid {pid})")
        return url
    if prometheus.binary() is None:
        echo("prometheus: not installed, not started (Debian: apt-get install prometheus)")
        return None
    targets = {}
    for service in PROCESSES.values():
        settings = service.settings()
        targets[service.name] = f"{settings.host}:{settings.port}"
    PROMETHEUS_DIR.mkdir(parents=True, exist_ok=True)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    config_file = PROMETHEUS_DIR / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(prometheus.local_config(targets)))
    with open(LOG_DIR / "prometheus.log", "ab") as log_file:
        process = subprocess.Popen(
            prometheus.command(config_file, PROMETHEUS_DIR / "data", PROMETHEUS_ADDRESS),
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    PROMETHEUS_PID.write_text(str(process.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            echo(f"prometheus: exited; see {LOG_DIR / 'prometheus.log'}")
            return None
        try:
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                echo(f"prometheus: ready at {url} (pid {process.pid}), log {LOG_DIR / 'prometheus.log'}")
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    echo(f"prometheus: not ready after {timeout:.0f}s; see {LOG_DIR / 'prometheus.log'}")
    return None


def stop_prometheus(echo, timeout: float = 20.0) -> None:
    pid = _prometheus_pid()
    if pid is not None:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
        echo("prometheus: stopped")
    PROMETHEUS_PID.unlink(missing_ok=True)
