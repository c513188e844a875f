"""Benchmark: POST /v1/requests on the real requests service (auth, validation,
eligibility, activation, history, outbox event, group commit) against a naive
FastAPI + SQLModel endpoint doing one insert and commit per request. Same
uvicorn flags, same SQLite settings (WAL, synchronous=FULL), same run, loaded
with wrk (apt-get install wrk) at 64 connections.

Goal (issue 4): at least 1.5x the naive endpoint's throughput with p99 under
50 ms, and every 201 durable: after each run the rows in the database are
counted against the 201s wrk saw.

Usage: .venv/bin/python -m bench.requests_submit [--seconds 10] [--connections 64] [--rounds 3]
"""

import argparse
import asyncio
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from bench.support import KAFKA, REPO, free_port, p99_ms, percentile_ms, requests_per_second, serve
from caj.keys import create_key

BODY = {"commitment_id": "caj-2006-2-1-04", "title": "Border post equipment",
        "description": "Scanners and radios for the posts on the Pyanj river, with training for 40 officers."}






def wait_until(check, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("timed out")


def wrk_post(url: str, key: str | None, seconds: int, connections: int, scratch: Path) -> dict:
    script = scratch / "post.lua"
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(BODY))}\n"
        + "".join(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}\n" for name, value in headers.items())
    )
    output = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
                            capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", output).group(1))
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", output)) else 0
    return {
        "rps": requests_per_second(output),
        "p50_ms": percentile_ms(output, 50), "p99_ms": p99_ms(output),
        "created": total - non_2xx, "non_2xx": non_2xx,
    }


def count_rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as connection:
        return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-requests-"))
    kafka_env = dict(os.environ, KAFKA_PORT=str(free_port()), KAFKA_CONTROLLER_PORT=str(free_port()),
                     KAFKA_DATA_DIR=str(scratch / "kafka"), KAFKA_FRESH="1")
    bootstrap = subprocess.run(["bash", str(KAFKA), "start"], env=kafka_env, check=True, capture_output=True,
                               text=True).stdout.strip()
    requests_db, naive_db = scratch / "requests.sqlite3", scratch / "naive.sqlite3"
    env = dict(os.environ, CATALOG_DATABASE_URL=f"sqlite:///{scratch / 'catalog.sqlite3'}",
               REQUESTS_DATABASE_URL=f"sqlite:///{requests_db}", NAIVE_DATABASE_URL=f"sqlite:///{naive_db}",
               CATALOG_KAFKA_BOOTSTRAP_SERVERS=bootstrap, REQUESTS_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
               CATALOG_LOG_LEVEL="WARNING", REQUESTS_LOG_LEVEL="WARNING",
               REQUESTS_RATE_LIMIT_PER_SECOND="1000000", REQUESTS_RATE_LIMIT_BURST="1000000")
    for service in ("catalog", "requests"):
        subprocess.run([str(REPO / ".venv/bin/caj"), "db", "upgrade", "--service", service], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    ports = {name: free_port() for name in ("catalog", "requests", "naive")}
    processes = [
        serve("--factory catalog_service.main:app", ports["catalog"], env, scratch / "catalog.log"),
        serve("--factory requests_service.main:app", ports["requests"], env, scratch / "requests.log"),
        serve("bench.naive_requests_app:app", ports["naive"], env, scratch / "naive.log"),
    ]
    try:
        _record, key, _ = asyncio.run(create_key(bootstrap, role="partner", agency_id="tj-bench", country="TJ"))
        requests_url = f"http://127.0.0.1:{ports['requests']}"
        wait_until(lambda: httpx.get(requests_url + "/readyz").status_code == 200)
        wait_until(lambda: httpx.get(requests_url + "/v1/offers/caj-2006-2-1-04",
                                     headers={"Authorization": f"Bearer {key}"}).status_code == 200)
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{ports['naive']}/docs").status_code == 200)
        first = httpx.post(requests_url + "/v1/requests", json=BODY, headers={"Authorization": f"Bearer {key}"})
        assert first.status_code == 201, first.text
        targets = {
            "requests service POST /v1/requests": (requests_url + "/v1/requests", key, requests_db, "requests"),
            "naive FastAPI+SQLModel insert+commit": (f"http://127.0.0.1:{ports['naive']}/naive", None, naive_db,
                                                     "naive_requests"),
        }
        results: dict[str, list[dict]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, (url, api_key, database, table) in targets.items():
                before = count_rows(database, table)
                result = wrk_post(url, api_key, args.seconds, args.connections, scratch)
                time.sleep(0.5)
                result["rows_added"] = count_rows(database, table) - before
                results[name].append(result)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        subprocess.run(["bash", str(KAFKA), "stop"], env=kafka_env, check=False, stderr=subprocess.DEVNULL)

    print(f"wrk -t2 -c{args.connections} -d{args.seconds}s, {args.rounds} interleaved rounds, medians")
    medians = {}
    for name, runs in results.items():
        medians[name] = statistics.median(run["rps"] for run in runs)
        p50 = statistics.median(run["p50_ms"] for run in runs)
        p99 = statistics.median(run["p99_ms"] for run in runs)
        durable = all(run["rows_added"] >= run["created"] for run in runs)
        errors = sum(run["non_2xx"] for run in runs)
        print(f"{name:<40} {medians[name]:8.0f} req/s  p50 {p50:6.1f} ms  p99 {p99:7.1f} ms  non-2xx {errors}  "
              f"every 201 stored: {durable} ({[(r['created'], r['rows_added']) for r in runs]})")
    names = list(medians)
    print(f"ratio {names[0]} / {names[1]}: {medians[names[0]] / medians[names[1]]:.2f}")


if __name__ == "__main__":
    main()
