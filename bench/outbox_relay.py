"""Benchmark: the outbox relay against a bare producer, in the same run.

1. Throughput: N events already staged in the outbox, published by the relay
   (read rows, send, await acks, mark published) vs the same N records sent by
   a bare idempotent acks=all producer. Ratio = relay / bare.
2. Latency from commit to broker ack for single events, with the relay woken
   on commit vs a relay that only polls (every 0.5 s): the reason for the
   after-commit hook.

Usage: .venv/bin/python -m bench.outbox_relay [--events 20000] [--database-url URL]
Starts its own broker on free ports unless KAFKA_BOOTSTRAP_SERVERS is set.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from sqlmodel import Session

from shared.db import make_engine, transaction
from shared.events import new_event, to_kafka
from shared.kafka import make_producer
from shared.migrations import upgrade
from shared.outbox import NewEvent, OutboxRelay, outbox_backlog, stage_events
from shared.settings import REPO_ROOT
from shared.topics import TopicSpec, ensure_topics

PAYLOAD = {"commitment_id": "caj-2006-2-1-04", "countries": ["TJ", "AF"], "note": "x" * 200}


def start_broker(data_dir: Path) -> tuple[str, dict]:
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    env = dict(os.environ, KAFKA_PORT=str(ports[0]), KAFKA_CONTROLLER_PORT=str(ports[1]),
               KAFKA_DATA_DIR=str(data_dir), KAFKA_FRESH="1")
    subprocess.run(["bash", str(REPO_ROOT / "deploy/kafka/kafka.sh"), "start"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return f"127.0.0.1:{ports[0]}", env


def stage(engine, topic: str, count: int, per_transaction: int = 500) -> None:
    for start in range(0, count, per_transaction):
        with transaction(engine) as session:
            stage_events(session, [
                NewEvent(topic=topic, key=f"key-{number % 64}", type="bench.v1", source="/bench", subject=str(number),
                         data=PAYLOAD)
                for number in range(start, min(start + per_transaction, count))
            ])


async def wait_drained(engine, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Session(engine) as session:
            if outbox_backlog(session)[0] == 0:
                return
        await asyncio.sleep(0.01)
    raise TimeoutError("outbox not drained")


async def bare_producer(bootstrap: str, topic: str, count: int) -> float:
    producer = make_producer(bootstrap, client_id="bench-bare")
    await producer.start()
    try:
        records = [
            to_kafka(new_event(type="bench.v1", source="/bench", subject=str(n), data=PAYLOAD), key=f"key-{n % 64}")
            for n in range(count)
        ]
        started = time.perf_counter()
        futures = [await producer.send(topic, value=r.value, key=r.key, headers=r.headers) for r in records]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def relay_throughput(bootstrap: str, database_url: str, topic: str, count: int) -> float:
    engine = make_engine(database_url)
    stage(engine, topic, count)
    producer = make_producer(bootstrap, client_id="bench-relay")
    await producer.start()
    relay = OutboxRelay(engine=engine, producer=producer, poll_interval=0.05, batch_size=500)
    started = time.perf_counter()
    relay.start()
    try:
        await wait_drained(engine)
        return time.perf_counter() - started
    finally:
        await relay.stop()
        await producer.stop()
        engine.dispose()


async def commit_to_ack_latency(bootstrap: str, database_url: str, topic: str, samples: int, wake: bool) -> list[float]:
    engine = make_engine(database_url)
    producer = make_producer(bootstrap, client_id="bench-latency")
    await producer.start()
    relay = OutboxRelay(engine=engine, producer=producer, poll_interval=0.5)
    relay.start()
    if not wake:
        relay.wake = lambda: None  # as if the after-commit hook did not exist
        from shared import outbox

        outbox._wakers[engine] = []
    latencies = []
    try:
        for number in range(samples):
            started = time.perf_counter()
            with transaction(engine) as session:
                stage_events(session, [NewEvent(topic=topic, key="k", type="bench.v1", source="/bench",
                                                subject=str(number), data=PAYLOAD)])
            await wait_drained(engine)
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.05 + (number % 7) * 0.03)  # arrivals spread across the poll interval
    finally:
        await relay.stop()
        await producer.stop()
        engine.dispose()
    return latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--latency-samples", type=int, default=60)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        broker_env = None
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            bootstrap, broker_env = start_broker(Path(scratch) / "kafka")
        try:
            database_url = args.database_url or f"sqlite:///{scratch}/bench.sqlite3"
            upgrade("catalog_service", database_url)
            topics = [
                TopicSpec(f"bench.{name}.{uuid.uuid4().hex[:6]}", partitions=3) for name in ("bare", "relay", "lat")
            ]
            await ensure_topics(bootstrap, topics)

            bare = await bare_producer(bootstrap, topics[0].name, args.events)
            relayed = await relay_throughput(bootstrap, database_url, topics[1].name, args.events)
            woken = await commit_to_ack_latency(bootstrap, database_url, topics[2].name, args.latency_samples, True)
            polled = await commit_to_ack_latency(bootstrap, database_url, topics[2].name, args.latency_samples, False)
        finally:
            if broker_env:
                stop = ["bash", str(REPO_ROOT / "deploy/kafka/kafka.sh"), "stop"]
                await asyncio.to_thread(subprocess.run, stop, env=broker_env, check=False)

    backend = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    print(f"database: {backend}; events: {args.events}")
    print(f"bare producer   : {args.events / bare:9.0f} events/s")
    print(f"outbox relay    : {args.events / relayed:9.0f} events/s  "
          f"({bare / relayed:.2f} of the bare producer's throughput)")
    for name, values in (("woken on commit", woken), ("poll only (0.5s)", polled)):
        print(f"commit->ack {name:<17}: p50 {percentile(values, 0.5) * 1000:7.1f} ms  "
              f"p99 {percentile(values, 0.99) * 1000:7.1f} ms  mean {statistics.mean(values) * 1000:7.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
