"""Benchmark: a backlog of events on `requests.events` drained to a local
webhook receiver by the notifications service, against a bare aiohttp client
sending the same number of signed POSTs to an identical receiver at the same
concurrency (the ceiling for this client and receiver on this machine).

The service consumes each event (one notification for the agency, one for the
coordinators, one webhook delivery), signs and sends the delivery, and records
its outcome with an event on `notifications.deliveries`, on SQLite with
`synchronous=FULL` (or PostgreSQL with `--postgres`). The broker, the
service (or `--replicas` of it), the database and the receivers share the
machine.

Goal (issue 5): at least 2,000 deliveries per second for a 20,000-event backlog.

Usage: .venv/bin/python -m bench.notifications_drain [--events 20000] [--concurrency 64]
       [--postgres postgresql+psycopg://caj:caj@127.0.0.1:54329/caj] [--replicas 2]
"""

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import httpx
import sqlalchemy
import uvloop
from aiokafka import AIOKafkaProducer

from bench.support import KAFKA, REPO, free_port, serve
from caj.keys import create_key
from notifications_service.webhooks import new_secret, sign, webhook_body
from shared.contracts.requests import REQUEST_STATUS_CHANGED, REQUESTS_SOURCE, RequestStatusChanged
from shared.events import new_event, to_kafka
from shared.topics import REQUESTS_EVENTS

AGENCY = "tj-bench-receiver"


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def start_service(env: dict, port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "notifications_service.main:app", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--log-level", "warning", "--loop", "uvloop", "--http", "httptools"],
        env=env, cwd=REPO, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200, 120, "the service")
    return process


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


async def produce_backlog(bootstrap: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        pending = []
        for number in range(count):
            data = RequestStatusChanged(
                request_id=str(uuid.uuid4()), commitment_id="caj-2006-2-1-04", country="TJ", agency_id=AGENCY,
                from_status="submitted", to_status="under_review", note=f"backlog {number}",
                changed_by_role="coordinator", changed_at=datetime.now(UTC), responsible_agencies=["jica"])
            record = to_kafka(new_event(type=REQUEST_STATUS_CHANGED, source=REQUESTS_SOURCE, subject=data.request_id,
                                        data=data.model_dump(mode="json")), key=data.request_id)
            pending.append(await producer.send(REQUESTS_EVENTS.name, value=record.value, key=record.key,
                                               headers=record.headers))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def bare_client(url: str, count: int, concurrency: int) -> float:
    """Seconds for a plain aiohttp client (the service's) to POST `count` signed bodies."""
    secret = new_secret()
    body = webhook_body(event_type=REQUEST_STATUS_CHANGED, event_time=datetime.now(UTC),
                        notification={"payload": {"note": "x" * 300}})
    slots = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as client:
        async def one(number: int) -> None:
            async with slots:
                signed = sign(delivery_id=f"msg_{number}", body=body, secrets_in_use=[secret])
                async with client.post(url, data=signed.body, headers=signed.headers) as response:
                    response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(one(number) for number in range(count)))
        return time.perf_counter() - started


def fresh_database(postgres: str | None, scratch: Path) -> tuple[str, Callable[[], None]]:
    """A new database's URL, and how to drop it."""
    if postgres is None:
        return f"sqlite:///{scratch / 'notifications.sqlite3'}", lambda: None
    name = f"caj_bench_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return sqlalchemy.engine.make_url(postgres).set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--postgres", metavar="URL",
                        help="a PostgreSQL server to use instead of SQLite (a fresh database is made on it)")
    parser.add_argument("--replicas", type=int, default=1,
                        help="service processes sharing the database (they split the topic's partitions)")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-notifications-"))
    kafka_env = dict(os.environ, KAFKA_PORT=str(free_port()), KAFKA_CONTROLLER_PORT=str(free_port()),
                     KAFKA_DATA_DIR=str(scratch / "kafka"), KAFKA_FRESH="1")
    bootstrap = subprocess.run(["bash", str(KAFKA), "start"], env=kafka_env, check=True, capture_output=True,
                               text=True).stdout.strip()
    database_url, drop_database = fresh_database(args.postgres, scratch)
    ports = [free_port() for _ in range(args.replicas)]
    env = dict(os.environ, NOTIFICATIONS_DATABASE_URL=database_url,
               NOTIFICATIONS_KAFKA_BOOTSTRAP_SERVERS=bootstrap, NOTIFICATIONS_LOG_LEVEL="WARNING",
               NOTIFICATIONS_WEBHOOK_ALLOW_PRIVATE_ADDRESSES="true",
               NOTIFICATIONS_DELIVERY_CONCURRENCY=str(args.concurrency),
               NOTIFICATIONS_RATE_LIMIT_PER_SECOND="1000", NOTIFICATIONS_RATE_LIMIT_BURST="1000")
    subprocess.run([str(REPO / ".venv/bin/caj"), "db", "upgrade", "--service", "notifications"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    receiver_ports = {"service": free_port(), "bare": free_port()}
    receivers = [serve("bench.webhook_receiver:app", receiver_port, env, scratch / f"receiver-{name}.log")
                 for name, receiver_port in receiver_ports.items()]
    services: list[subprocess.Popen] = []
    try:
        for receiver_port in receiver_ports.values():
            wait_until(lambda p=receiver_port: httpx.get(f"http://127.0.0.1:{p}/stats").status_code == 200, 30,
                       "a receiver")
        # 1. Register the agency's webhook, then stop the service.
        _record, key, _ = asyncio.run(create_key(bootstrap, role="partner", agency_id=AGENCY, country="TJ"))
        service = start_service(env, ports[0], scratch / "service.log")
        hook = f"http://127.0.0.1:{receiver_ports['service']}/hook"
        registered = httpx.put(f"http://127.0.0.1:{ports[0]}/v1/agencies/{AGENCY}/webhook", json={"url": hook},
                               headers={"Authorization": f"Bearer {key}"})
        assert registered.status_code == 201, registered.text
        stop(service)
        # 2. The backlog, produced while the service is down.
        started = time.perf_counter()
        asyncio.run(produce_backlog(bootstrap, args.events))
        print(f"backlog of {args.events} events produced in {time.perf_counter() - started:.1f} s")
        # 3. Start the service and time the drain.
        spawned = time.time()
        services = [start_service(env, port, scratch / f"service-{number}.log") for number, port in enumerate(ports)]
        stats_url = f"http://127.0.0.1:{receiver_ports['service']}/stats"
        wait_until(lambda: httpx.get(stats_url).json()["unique_ids"] >= args.events, 900, "the drain")
        stats = httpx.get(stats_url).json()
        time.sleep(1.0)
        engine = sqlalchemy.create_engine(database_url)
        with engine.connect() as connection:
            delivered = connection.execute(sqlalchemy.text(
                "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'")).scalar()
        engine.dispose()
        # 4. The bare client, same receiver code, same concurrency.
        bare_seconds = uvloop.run(bare_client(f"http://127.0.0.1:{receiver_ports['bare']}/hook", args.events,
                                               args.concurrency))
    finally:
        for service in services:
            if service.poll() is None:
                stop(service)
        for receiver in receivers:
            receiver.send_signal(signal.SIGTERM)
            receiver.wait(timeout=30)
        subprocess.run(["bash", str(KAFKA), "stop"], env=kafka_env, check=False, stderr=subprocess.DEVNULL)
        drop_database()

    drain_seconds = stats["last"] - stats["first"]
    service_rate = args.events / drain_seconds
    bare_rate = args.events / bare_seconds
    print(json.dumps({"events": args.events, "concurrency": args.concurrency, "replicas": args.replicas,
                      "received": stats["requests"], "unique_webhook_ids": stats["unique_ids"],
                      "delivered_rows": delivered}))
    print(f"service: {service_rate:,.0f} deliveries/s (first to last delivery {drain_seconds:.1f} s; "
          f"{stats['last'] - spawned:.1f} s from process start)")
    print(f"bare aiohttp client: {bare_rate:,.0f} POSTs/s ({bare_seconds:.1f} s)")
    print(f"ratio service / bare client: {service_rate / bare_rate:.2f}")


if __name__ == "__main__":
    main()
