"""What the HTTP benchmarks share: ports, identically configured servers,
and reading wrk's report."""

import re
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KAFKA = REPO / "deploy" / "kafka" / "kafka.sh"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(app: str, port: int, env: dict, log: Path) -> subprocess.Popen:
    """One uvicorn process; every contender gets exactly these settings."""
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", *app.split(), "--host", "127.0.0.1", "--port", str(port),
         "--no-access-log", "--log-level", "warning", "--loop", "uvloop", "--http", "httptools"],
        env=env, cwd=REPO, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )


def percentile_ms(wrk_output: str, percent: int) -> float:
    """A latency percentile from wrk --latency (50, 75, 90 or 99)."""
    value, unit = re.search(rf"\b{percent}%\s+([\d.]+)(us|ms|s)", wrk_output).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def p99_ms(wrk_output: str) -> float:
    return percentile_ms(wrk_output, 99)


def requests_per_second(wrk_output: str) -> float:
    return float(re.search(r"Requests/sec:\s+([\d.]+)", wrk_output).group(1))
