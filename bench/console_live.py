"""Benchmark: the console's live updates. 200 open server-sent-event streams
(signed in as a coordinator, an operator and partner agencies of four
countries, one of them the agency responsible for the offers), then a burst
of 1,000 request events published on `requests.events`.

Checked: every event reaches every stream whose user may see it and none
other (the rule is written out here, independently of the console's).
Measured: the time from the first publish to the last event at the last
stream, against a bare Kafka consumer reading the same burst in this process
(the baseline: what reading the topic costs at all); the console's memory
(VmRSS) before the streams, with them open, and its peak (VmHWM).

Usage: .venv/bin/python -m bench.console_live [--streams 200] [--events 1000]
"""

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.support import KAFKA, free_port, serve
from caj.keys import create_key
from shared.contracts.requests import REQUEST_STATUS_CHANGED, REQUEST_SUBMITTED, REQUESTS_SOURCE
from shared.events import new_event, to_kafka
from shared.topics import REQUESTS_EVENTS, ensure_topics

COUNTRIES = ("TJ", "KZ", "KG", "UZ", "AF")


@dataclass(frozen=True)
class Viewer:
    role: str
    country: str | None = None
    agency: str | None = None

    def may_see(self, event: dict) -> bool:
        if self.role in ("coordinator", "operator"):
            return True
        return event["country"] == self.country or self.agency in event["responsible_agencies"]


VIEWERS = (
    Viewer("coordinator"), Viewer("operator"), Viewer("partner", "TJ", "tj-border-service"),
    Viewer("partner", "KZ", "kz-mfa"), Viewer("partner", "UZ", "uz-mfa"), Viewer("partner", "JP", "jica"),
)


@dataclass
class Stream:
    viewer: Viewer
    received: list[str] = field(default_factory=list)
    last_at: float = 0.0
    connected: asyncio.Event = field(default_factory=asyncio.Event)


def rss_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


async def sign_in(url: str, key: str) -> httpx.Cookies:
    """A session of its own, as a browser would open it (a fresh cookie jar)."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await client.get("/sign-in")
        csrf = client.cookies["caj_csrf"]
        answer = await client.post("/sign-in", data={"key": key, "csrf_token": csrf})
        assert answer.status_code == 303, answer.text[:300]
        return httpx.Cookies({"caj_session": answer.cookies["caj_session"]})


async def follow(url: str, cookies: httpx.Cookies, stream: Stream, expected: int, done: asyncio.Event) -> None:
    async with httpx.AsyncClient(base_url=url, cookies=cookies, timeout=None) as client, \
            client.stream("GET", "/live") as response:
        assert response.status_code == 200
        data_lines: list[str] = []
        async for line in response.aiter_lines():
            if line.startswith(": connected"):
                stream.connected.set()
            elif line.startswith("data: "):
                data_lines.append(line[6:])
            elif line == "" and data_lines:
                stream.received.append(json.loads(data_lines[-1])["request_id"])
                stream.last_at = time.perf_counter()
                data_lines = []
                if len(stream.received) >= expected:
                    done.set()
                    return


async def bare_consumer_time(bootstrap: str, ready: asyncio.Event, count: int) -> float:
    """The baseline: a plain consumer reading the burst from the topic's end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(REQUESTS_EVENTS.name, p) for p in range(REQUESTS_EVENTS.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for partition in partitions:
            await consumer.position(partition)
        ready.set()
        seen = 0
        while seen < count:
            batches = await consumer.getmany(timeout_ms=200)
            seen += sum(len(records) for records in batches.values())
        return time.perf_counter()
    finally:
        await consumer.stop()


async def run(console_url: str, bootstrap: str, pid: int, streams_wanted: int, events_wanted: int) -> dict:
    keys = {}
    for viewer in VIEWERS:
        _record, keys[viewer], _ = await create_key(bootstrap, role=viewer.role, agency_id=viewer.agency,
                                                    country=viewer.country)
    async with httpx.AsyncClient(base_url=console_url, timeout=30) as client:
        deadline = time.monotonic() + 60
        while True:
            try:
                if (await client.get("/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass  # not listening yet
            assert time.monotonic() < deadline, "the console never became ready"
            await asyncio.sleep(0.3)
        sessions = {}
        for viewer, key in keys.items():
            while True:  # a key reaches the console through Kafka a moment after it is made
                try:
                    sessions[viewer] = await sign_in(console_url, key)
                    break
                except AssertionError:
                    assert time.monotonic() < deadline, "a key never reached the console"
                    await asyncio.sleep(0.3)

    random.seed(7)
    events = []
    for index in range(events_wanted):
        country = random.choice(COUNTRIES)
        responsible = ["jica"] if index % 3 == 0 else []
        events.append({"request_id": f"bench-{index:04d}-{uuid.uuid4().hex[:6]}", "commitment_id": "caj-2006-2-1-04",
                       "country": country, "agency_id": f"{country.lower()}-agency", "title": "burst",
                       "responsible_agencies": responsible, "from_status": "submitted", "to_status": "under_review"})
    streams = [Stream(VIEWERS[index % len(VIEWERS)]) for index in range(streams_wanted)]
    expected = {id(stream): [e["request_id"] for e in events if stream.viewer.may_see(e)] for stream in streams}
    memory_before = rss_kib(pid)
    dones = [asyncio.Event() for _ in streams]
    followers = [asyncio.create_task(follow(console_url, sessions[stream.viewer], stream,
                                            len(expected[id(stream)]), done))
                 for stream, done in zip(streams, dones, strict=True)]
    deadline = time.monotonic() + 120
    while not all(stream.connected.is_set() for stream in streams):
        failed = [task.exception() for task in followers if task.done() and task.exception()]
        assert not failed, f"{len(failed)} streams failed: {failed[0]!r}"
        assert time.monotonic() < deadline, f"{sum(s.connected.is_set() for s in streams)} streams connected"
        await asyncio.sleep(0.2)
    memory_open = rss_kib(pid)

    baseline_ready = asyncio.Event()
    baseline = asyncio.create_task(bare_consumer_time(bootstrap, baseline_ready, events_wanted))
    await baseline_ready.wait()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        started = time.perf_counter()
        sends = []
        for index, data in enumerate(events):
            event = new_event(type=REQUEST_SUBMITTED if index % 2 == 0 else REQUEST_STATUS_CHANGED,
                              source=REQUESTS_SOURCE, subject=data["request_id"], data=data)
            record = to_kafka(event, key=data["request_id"])
            sends.append(await producer.send(REQUESTS_EVENTS.name, value=record.value, key=record.key,
                                             headers=record.headers))
        await asyncio.gather(*sends)
        published = time.perf_counter()
    finally:
        await producer.stop()
    baseline_done = await asyncio.wait_for(baseline, timeout=120)
    await asyncio.wait_for(asyncio.gather(*(done.wait() for done in dones)), timeout=120)
    await asyncio.sleep(1.0)  # anything that should not have come would come now
    memory_after = rss_kib(pid)
    for task in followers:
        task.cancel()
    await asyncio.gather(*followers, return_exceptions=True)

    wrong = [(stream.viewer, len(stream.received)) for stream in streams
             if sorted(stream.received) != sorted(expected[id(stream)])]
    last_stream = max(stream.last_at for stream in streams)
    deliveries = sum(len(stream.received) for stream in streams)
    return {
        "streams": len(streams), "events": len(events), "deliveries": deliveries, "wrong_streams": wrong,
        "publish_s": published - started, "bare_consumer_s": baseline_done - started,
        "last_stream_s": last_stream - started, "memory_before": memory_before, "memory_open": memory_open,
        "memory_after": memory_after,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-console-live-"))
    kafka_env = dict(os.environ, KAFKA_PORT=str(free_port()), KAFKA_CONTROLLER_PORT=str(free_port()),
                     KAFKA_DATA_DIR=str(scratch / "kafka"), KAFKA_FRESH="1")
    bootstrap = subprocess.run(["bash", str(KAFKA), "start"], env=kafka_env, check=True, capture_output=True,
                               text=True).stdout.strip()
    asyncio.run(ensure_topics(bootstrap, [REQUESTS_EVENTS], retry_for=30))
    port = free_port()
    env = dict(os.environ, CONSOLE_KAFKA_BOOTSTRAP_SERVERS=bootstrap, CONSOLE_LOG_LEVEL="WARNING")
    console = serve("--factory console_service.main:app", port, env, scratch / "console.log")
    try:
        result = asyncio.run(run(f"http://127.0.0.1:{port}", bootstrap, console.pid, args.streams, args.events))
    finally:
        console.send_signal(signal.SIGTERM)
        console.wait(timeout=30)
        subprocess.run(["bash", str(KAFKA), "stop"], env=kafka_env, check=False, stderr=subprocess.DEVNULL)

    print(f"{result['streams']} streams, {result['events']} events, {result['deliveries']} deliveries")
    print(f"every event at every stream that may see it, none elsewhere: {not result['wrong_streams']} "
          f"{result['wrong_streams'][:5]}")
    print(f"publish (producer acks) {result['publish_s'] * 1000:8.1f} ms")
    print(f"bare consumer, last     {result['bare_consumer_s'] * 1000:8.1f} ms")
    print(f"console, last stream    {result['last_stream_s'] * 1000:8.1f} ms  "
          f"ratio to the bare consumer {result['last_stream_s'] / result['bare_consumer_s']:.2f}")
    for label, key in (("before the streams", "memory_before"), ("streams open", "memory_open"),
                       ("after the burst", "memory_after")):
        memory = result[key]
        print(f"console memory {label:<20} RSS {memory['VmRSS'] / 1024:6.1f} MiB  "
              f"peak {memory['VmHWM'] / 1024:6.1f} MiB")


if __name__ == "__main__":
    main()
