"""Benchmark: the console's Requests page (50 rows) against the API call it
makes (`GET /v1/requests?sort=-created_at&limit=50`), with 10,000 requests in
the system, in the same run: the catalog, requests and console processes
(uvicorn, the same flags as the other benchmarks, SQLite), wrk rounds
interleaved, medians. Both are asked as the same coordinator: the page with
its session cookie, the API with the key the session holds.

Goal (the console's issue): the page costs at most 2x the call.

Usage: .venv/bin/python -m bench.console_requests_page [--requests 10000] [--seconds 10] [--connections 8]
       [--rounds 3]
"""

import argparse
import asyncio
import os
import random
import re
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlmodel import Session, create_engine

from bench.support import KAFKA, REPO, free_port, percentile_ms, requests_per_second, serve
from caj.keys import create_key
from requests_service.models import RequestRow

# Each country with an agency and an offer it may request.
COUNTRIES = {"TJ": ("tj-border-service", "caj-2006-2-1-04"), "KZ": ("kz-customs", "caj-2006-2-1-05")}
COMMITMENT = "caj-2006-2-1-04"


def wait_until(check, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("timed out")


def seed(database_url: str, count: int) -> None:
    """`count` requests as rows, written before the service starts (as the
    review report's benchmark seeds reports): through the API on this loaded
    machine 10,000 took too long. Spread over two countries, statuses and
    creation times, so sorting and counting work on varied data."""
    rng = random.Random(12)
    statuses = ("submitted", "under_review", "info_requested", "approved", "in_progress", "fulfilled", "declined")
    start = datetime(2025, 1, 1, tzinfo=UTC)
    engine = create_engine(database_url)
    with Session(engine) as session:
        for index in range(count):
            country = list(COUNTRIES)[index % len(COUNTRIES)]
            agency, offer = COUNTRIES[country]
            created = start + timedelta(minutes=rng.randrange(0, 700_000))
            session.add(RequestRow(
                id=str(uuid.UUID(int=rng.getrandbits(128))), commitment_id=offer, country=country, agency_id=agency,
                title=f"Seeded request {index:05d}", description="Equipment and training for border posts.",
                status=rng.choice(statuses), created_by_key="bench", created_at=created,
                updated_at=created + timedelta(days=rng.randrange(0, 60)), status_since=created))
        session.commit()
    engine.dispose()


def wrk_get(url: str, header: str, seconds: int, connections: int) -> dict:
    output = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", header, url],
                            capture_output=True, text=True, check=True).stdout
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", output)) else 0
    return {"rps": requests_per_second(output), "p50_ms": percentile_ms(output, 50),
            "p99_ms": percentile_ms(output, 99), "non_2xx": non_2xx}


def console_session(console_url: str, key: str) -> str:
    with httpx.Client(base_url=console_url, timeout=30) as client:
        client.get("/sign-in")
        answer = client.post("/sign-in", data={"key": key, "csrf_token": client.cookies["caj_csrf"]})
        assert answer.status_code == 303, answer.text[:300]
        return answer.cookies["caj_session"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-console-page-"))
    kafka_env = dict(os.environ, KAFKA_PORT=str(free_port()), KAFKA_CONTROLLER_PORT=str(free_port()),
                     KAFKA_DATA_DIR=str(scratch / "kafka"), KAFKA_FRESH="1")
    bootstrap = subprocess.run(["bash", str(KAFKA), "start"], env=kafka_env, check=True, capture_output=True,
                               text=True).stdout.strip()
    ports = {name: free_port() for name in ("catalog", "requests", "console")}
    env = dict(os.environ, CATALOG_DATABASE_URL=f"sqlite:///{scratch / 'catalog.sqlite3'}",
               REQUESTS_DATABASE_URL=f"sqlite:///{scratch / 'requests.sqlite3'}",
               CATALOG_KAFKA_BOOTSTRAP_SERVERS=bootstrap, REQUESTS_KAFKA_BOOTSTRAP_SERVERS=bootstrap,
               CONSOLE_KAFKA_BOOTSTRAP_SERVERS=bootstrap, CONSOLE_REQUESTS_URL=f"http://127.0.0.1:{ports['requests']}",
               CONSOLE_CATALOG_URL=f"http://127.0.0.1:{ports['catalog']}",
               CATALOG_LOG_LEVEL="WARNING", REQUESTS_LOG_LEVEL="WARNING", CONSOLE_LOG_LEVEL="WARNING",
               REQUESTS_RATE_LIMIT_PER_SECOND="1000000", REQUESTS_RATE_LIMIT_BURST="1000000")
    for service in ("catalog", "requests"):
        subprocess.run([str(REPO / ".venv/bin/caj"), "db", "upgrade", "--service", service], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    seed(env["REQUESTS_DATABASE_URL"], args.requests)
    _record, coordinator, _ = asyncio.run(create_key(bootstrap, role="coordinator"))
    processes = [serve(f"--factory {service}_service.main:app", ports[service], env, scratch / f"{service}.log")
                 for service in ("catalog", "requests", "console")]
    requests_url, console_url = (f"http://127.0.0.1:{ports[name]}" for name in ("requests", "console"))
    results: dict[str, list[dict]] = {"API GET /v1/requests (50)": [], "console /requests page (50 rows)": []}
    try:
        auth = {"Authorization": f"Bearer {coordinator}"}
        wait_until(lambda: httpx.get(requests_url + f"/v1/offers/{COMMITMENT}", headers=auth).status_code == 200)
        wait_until(lambda: httpx.get(console_url + "/readyz").status_code == 200)
        total = httpx.get(requests_url + "/v1/requests", headers=auth, params={"limit": 1}).json()["total"]
        assert total >= args.requests, total
        session = console_session(console_url, coordinator)
        page = httpx.get(console_url + "/requests", cookies={"caj_session": session})
        assert page.status_code == 200 and page.text.count('<a href="/requests/') == 50, page.status_code
        targets = {
            "API GET /v1/requests (50)": (requests_url + "/v1/requests?sort=-created_at&limit=50&offset=0",
                                          f"Authorization: Bearer {coordinator}"),
            "console /requests page (50 rows)": (console_url + "/requests", f"Cookie: caj_session={session}"),
        }
        for _ in range(args.rounds):
            for name, (url, header) in targets.items():
                results[name].append(wrk_get(url, header, args.seconds, args.connections))
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        subprocess.run(["bash", str(KAFKA), "stop"], env=kafka_env, check=False, stderr=subprocess.DEVNULL)

    print(f"{total} requests; wrk -t1 -c{args.connections} -d{args.seconds}s, "
          f"{args.rounds} interleaved rounds, medians")
    medians = {}
    for name, runs in results.items():
        medians[name] = {key: statistics.median(run[key] for run in runs) for key in ("rps", "p50_ms", "p99_ms")}
        errors = sum(run["non_2xx"] for run in runs)
        print(f"{name:<36} {medians[name]['rps']:8.0f} req/s  p50 {medians[name]['p50_ms']:6.1f} ms  "
              f"p99 {medians[name]['p99_ms']:7.1f} ms  non-2xx {errors}")
    api, console = medians.values()
    print(f"cost of the page / cost of the call (req/s ratio): {api['rps'] / console['rps']:.2f}  "
          f"(p50 ratio {console['p50_ms'] / api['p50_ms']:.2f})")


if __name__ == "__main__":
    main()
