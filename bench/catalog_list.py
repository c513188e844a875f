"""Benchmark: GET /v1/commitments (a page of 50) against bare FastAPI JSON
endpoints, each served by one uvicorn process with the same flags, in the same
run, loaded with wrk (apt-get install wrk).

Goal (issue 3): the catalog list reaches at least 80% of the bare endpoint's
throughput, and its p99 is reported beside the bare one's. Three baselines:
a tiny JSON object; the same 50 items through FastAPI's default
serialisation; the same page pre-rendered (no work per request at all).

Usage: .venv/bin/python -m bench.catalog_list [--seconds 10] [--connections 32] [--rounds 3]
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from bench.support import KAFKA, REPO, free_port, p99_ms, requests_per_second, serve


def wait_ok(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} never answered 200")


def wrk(url: str, seconds: int, connections: int) -> tuple[float, float]:
    """Requests per second and p99 latency in ms."""
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps, p99 = requests_per_second(output), p99_ms(output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} non-2xx responses")
    return rps, p99


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    kafka_port, controller_port = free_port(), free_port()
    kafka_env = dict(os.environ, KAFKA_PORT=str(kafka_port), KAFKA_CONTROLLER_PORT=str(controller_port),
                     KAFKA_DATA_DIR=str(scratch / "kafka"), KAFKA_FRESH="1")
    subprocess.run(["bash", str(KAFKA), "start"], env=kafka_env, check=True, stdout=subprocess.DEVNULL)

    catalog_port, bare_port = free_port(), free_port()
    database_url = f"sqlite:///{scratch / 'catalog.sqlite3'}"
    env = dict(os.environ, CATALOG_DATABASE_URL=database_url, CATALOG_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{kafka_port}",
               CATALOG_LOG_LEVEL="WARNING")
    subprocess.run([str(REPO / ".venv/bin/caj"), "db", "upgrade", "--service", "catalog"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    processes = [
        serve("--factory catalog_service.main:app", catalog_port, env, scratch / "catalog.log"),
        serve("bench.bare_app:app", bare_port, env, scratch / "bare.log"),
    ]
    try:
        wait_ok(f"http://127.0.0.1:{catalog_port}/readyz")
        wait_ok(f"http://127.0.0.1:{bare_port}/bare")
        targets = {
            "catalog /v1/commitments?limit=50": f"http://127.0.0.1:{catalog_port}/v1/commitments?limit=50",
            "bare FastAPI tiny JSON": f"http://127.0.0.1:{bare_port}/bare",
            "bare FastAPI same 50 items": f"http://127.0.0.1:{bare_port}/bare-page",
            "bare FastAPI same page, pre-rendered": f"http://127.0.0.1:{bare_port}/bare-bytes",
        }
        body = httpx.get(targets["catalog /v1/commitments?limit=50"]).json()
        assert len(body["items"]) == 50, "the catalog must return a full page"
        for url in targets.values():
            wrk(url, 2, args.connections)  # warm-up
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
        for _ in range(args.rounds):  # interleaved, so drift in machine load hits all alike
            for name, url in targets.items():
                results[name].append(wrk(url, args.seconds, args.connections))
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)
        subprocess.run(["bash", str(KAFKA), "stop"], env=kafka_env, check=False, stderr=subprocess.DEVNULL)

    print(f"wrk -t1 -c{args.connections} -d{args.seconds}s, {args.rounds} interleaved rounds, medians")
    medians = {name: (statistics.median(r for r, _ in runs), statistics.median(p for _, p in runs))
               for name, runs in results.items()}
    catalog_rps = medians["catalog /v1/commitments?limit=50"][0]
    for name, (rps, p99) in medians.items():
        print(f"{name:<40} {rps:9.0f} req/s   p99 {p99:6.1f} ms   catalog/this {catalog_rps / rps:5.2f}")


if __name__ == "__main__":
    main()
