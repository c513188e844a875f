"""Benchmark: from a partner's POST to the responsible agency's webhook, at
constant rates, against the raw chain (bench/raw_chain.py) in the same run.

The whole system runs as in production, on free ports: a Kafka broker,
catalog, requests and notifications (uvicorn, SQLite with synchronous=FULL),
and one receiver (bench/latency_receiver.py) for both chains. The
responsible agency of an on-request commitment registers a webhook for
`request.submitted` only; partner agencies of Tajikistan submit requests,
spread over `--keys` API keys so that no key nears the per-key rate limit.

Each rate is run for the system, then for the raw chain, by an open-loop
generator: request i is sent at start + i / rate, whatever the answers to
the earlier ones. Latency is from the 201 to the receiver's arrival. After
every rate the script checks that each 201 reached the receiver exactly once.

The per-hop breakdown of the system comes from its own rows and records
(same clock: one machine): sent -> staged in the outbox (`submit`) -> 201
(`commit`) -> the Kafka record's timestamp, set when the relay produced it
(`outbox publish`) -> the inbox row (`consume`) -> the webhook attempt's
start (`route, commit, claim`) -> the receiver (`send`).

Usage: .venv/bin/python -m bench.e2e_latency [--rates 20,50,100,200] [--seconds 15] [--keys 20]
"""

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import quantiles

import aiohttp
import httpx
import uvloop
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from bench.support import KAFKA, REPO, free_port, serve
from caj.keys import create_key
from shared.contracts.requests import REQUEST_SUBMITTED
from shared.migrations import upgrade
from shared.topics import REQUESTS_EVENTS

COMMITMENT = "caj-2006-2-1-04"  # on request; Tajikistan and Afghanistan may ask
RAW_TOPIC = "raw.chain"
HOPS = ("submit", "commit", "outbox publish", "consume", "route, commit, claim", "send")


@dataclass
class Sent:
    request_id: str
    sent: float
    answered: float


@dataclass
class Phase:
    chain: str
    rate: int
    sent: list[Sent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Mean seconds per hop over the phase, from the services' own histogram.
    hop_means: dict[str, float] = field(default_factory=dict)
    # CPU seconds each process used during the phase (sending and draining).
    cpu: dict[str, float] = field(default_factory=dict)


def hop_totals(urls: list[str]) -> dict[str, tuple[float, float]]:
    """hop -> (sum, count) of caj_event_hop_latency_seconds on the services' /metrics."""
    totals: dict[str, tuple[float, float]] = {}
    for url in urls:
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
            for sample in family.samples:
                total, count = totals.get(sample.labels.get("hop", ""), (0.0, 0.0))
                if sample.name == "caj_event_hop_latency_seconds_sum":
                    totals[sample.labels["hop"]] = (total + sample.value, count)
                elif sample.name == "caj_event_hop_latency_seconds_count":
                    totals[sample.labels["hop"]] = (total, count + sample.value)
    return totals


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def percentile(values: list[float], percent: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return quantiles(values, n=100, method="inclusive")[percent - 1]


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- the generator ------------------------------------------------------------------
async def open_loop(phase: Phase, url: str, seconds: float, body_for, headers_for) -> None:
    """Send rate x seconds POSTs, each at its scheduled moment."""
    count = int(phase.rate * seconds)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as client:
        async def one(number: int) -> None:
            body = body_for(number)
            sent = time.time()
            try:
                async with client.post(url, json=body, headers=headers_for(number)) as response:
                    answer = await response.read()
                    answered = time.time()
                    if response.status != 201:
                        phase.errors.append(f"{response.status}: {answer[:200]!r}")
                        return
            except (aiohttp.ClientError, TimeoutError) as error:
                phase.errors.append(repr(error))
                return
            request_id = body.get("request_id") or json.loads(answer)["id"]
            phase.sent.append(Sent(request_id, sent, answered))

        loop = asyncio.get_running_loop()
        start = loop.time() + 0.1
        tasks = []
        for number in range(count):
            delay = start + number / phase.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(number)))
        await asyncio.gather(*tasks)


def arrivals(receiver: str) -> dict[str, list[float]]:
    return httpx.get(f"{receiver}/arrivals", timeout=30).json()


def wait_arrived(receiver: str, phase: Phase, timeout: float = 300) -> dict[str, list[float]]:
    wanted = {sent.request_id for sent in phase.sent}
    deadline = time.monotonic() + timeout
    while True:
        seen = arrivals(receiver)
        missing = wanted - seen.keys()
        if not missing:
            time.sleep(1.0)  # a duplicate would come after the first
            return arrivals(receiver)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{phase.chain} at {phase.rate}/s: {len(missing)} requests never reached the receiver")
        time.sleep(0.2)


# -- the system's own timestamps ------------------------------------------------------
def _utc(value: str | None) -> float | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def hop_times(requests_db: Path, notifications_db: Path, record_times: dict[str, float],
              agency: str) -> dict[str, dict[str, float | None]]:
    """request id -> the moment it passed each point, from the services' rows."""
    times: dict[str, dict[str, float | None]] = {}
    with sqlite3.connect(requests_db) as connection:
        for request_id, event_id, staged in connection.execute(
                "SELECT message_key, event_id, created_at FROM outbox_messages WHERE event_type = ?",
                (REQUEST_SUBMITTED,)):
            times[request_id] = {"event_id": event_id, "staged": _utc(staged),  # type: ignore[dict-item]
                                 "produced": record_times.get(event_id)}
    by_event = {row["event_id"]: row for row in times.values()}
    with sqlite3.connect(notifications_db) as connection:
        for event_id, processed in connection.execute("SELECT event_id, processed_at FROM processed_events"):
            if event_id in by_event:
                by_event[event_id]["consumed"] = _utc(processed)
        for event_id, attempted in connection.execute(
                "SELECT n.event_id, a.attempted_at FROM notifications n "
                "JOIN webhook_deliveries d ON d.notification_id = n.id "
                "JOIN webhook_delivery_attempts a ON a.delivery_id = d.id AND a.attempt = 1 "
                "WHERE n.recipient = ?", (agency,)):
            if event_id in by_event:
                by_event[event_id]["attempted"] = _utc(attempted)
    return times


async def record_timestamps(bootstrap: str) -> dict[str, float]:
    """CloudEvent id -> the timestamp of its record on requests.events."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(REQUESTS_EVENTS.name, number) for number in range(REQUESTS_EVENTS.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        stamps: dict[str, float] = {}
        async def behind() -> bool:
            return any([await consumer.position(partition) < ends[partition] for partition in partitions])

        while await behind():
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    event_id = dict(record.headers).get("ce_id")
                    if event_id:
                        stamps[event_id.decode()] = record.timestamp / 1000
        return stamps
    finally:
        await consumer.stop()


# -- the stack --------------------------------------------------------------------------
class Stack:
    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.processes: list[subprocess.Popen] = []
        self.pids: dict[str, int] = {}  # process name -> pid, for CPU accounting
        self.kafka_env = dict(os.environ, KAFKA_PORT=str(free_port()), KAFKA_CONTROLLER_PORT=str(free_port()),
                              KAFKA_DATA_DIR=str(scratch / "kafka"), KAFKA_FRESH="1")
        self.bootstrap = ""

    def start(self) -> None:
        self.bootstrap = subprocess.run(["bash", str(KAFKA), "start"], env=self.kafka_env, check=True,
                                        capture_output=True, text=True).stdout.strip()
        asyncio.run(self._create_raw_topic())
        env = dict(os.environ)
        self.urls: dict[str, str] = {}
        self.databases: dict[str, Path] = {}
        for name in ("catalog", "requests", "notifications"):
            port = free_port()
            database = self.scratch / f"{name}.sqlite3"
            prefix = name.upper()
            env |= {f"{prefix}_DATABASE_URL": f"sqlite:///{database}", f"{prefix}_KAFKA_BOOTSTRAP_SERVERS":
                    self.bootstrap, f"{prefix}_LOG_LEVEL": "WARNING", f"{prefix}_PORT": str(port)}
            upgrade(f"{name}_service", f"sqlite:///{database}")
            self.urls[name], self.databases[name] = f"http://127.0.0.1:{port}", database
        env["NOTIFICATIONS_WEBHOOK_ALLOW_PRIVATE_ADDRESSES"] = "true"
        for name in ("catalog", "requests", "notifications"):
            port = int(self.urls[name].rsplit(":", 1)[1])
            self.processes.append(serve(f"--factory {name}_service.main:app", port, env,
                                        self.scratch / f"{name}.log"))
            self.pids[name] = self.processes[-1].pid
        receiver_port, raw_port = free_port(), free_port()
        self.receiver = f"http://127.0.0.1:{receiver_port}"
        self.raw = f"http://127.0.0.1:{raw_port}"
        self.processes.append(serve("bench.latency_receiver:app", receiver_port, env, self.scratch / "receiver.log"))
        raw_env = env | {"RAW_CHAIN_DATABASE": str(self.scratch / "raw.sqlite3"), "RAW_CHAIN_BOOTSTRAP": self.bootstrap,
                         "RAW_CHAIN_TOPIC": RAW_TOPIC}
        self.processes.append(serve("bench.raw_chain:app", raw_port, raw_env, self.scratch / "raw.log"))
        self.pids["raw chain"] = self.processes[-1].pid
        raw_consumer = subprocess.Popen(
            [sys.executable, "-m", "bench.raw_chain", "consume", self.bootstrap, RAW_TOPIC, f"{self.receiver}/raw"],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=(self.scratch / "raw-consumer.log").open("wb"))
        self.processes.append(raw_consumer)
        self.pids["raw consumer"] = raw_consumer.pid
        broker_pid = (self.scratch / "kafka" / "kafka.pid").read_text().strip()
        if broker_pid.isdigit():
            self.pids["kafka"] = int(broker_pid)
        for name, url in self.urls.items():
            wait_until(lambda u=url: httpx.get(f"{u}/readyz").status_code == 200, 180, name)
        wait_until(lambda: httpx.get(f"{self.receiver}/arrivals").status_code == 200, 30, "the receiver")
        wait_until(lambda: httpx.get(self.raw).status_code == 200, 30, "the raw chain")
        assert raw_consumer.stdout is not None
        assert raw_consumer.stdout.readline().strip() == b"assigned", "the raw chain's consumer did not start"

    async def _create_raw_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            # As many partitions as requests.events: the same fan-out for both chains.
            await admin.create_topics([NewTopic(RAW_TOPIC, num_partitions=REQUESTS_EVENTS.partitions,
                                                replication_factor=1)])
        finally:
            await admin.close()

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) each process has used so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        used = {}
        for name, pid in self.pids.items():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            used[name] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        return used

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        subprocess.run(["bash", str(KAFKA), "stop"], env=self.kafka_env, check=False, stderr=subprocess.DEVNULL)


def make_key(bootstrap: str, **identity: str) -> str:
    _record, key, _new = asyncio.run(create_key(bootstrap, **identity))  # type: ignore[arg-type]
    return key


def prepare(stack: Stack, key_count: int) -> tuple[list[str], str]:
    """Partner keys accepted by the requests service, and the responsible
    agency, whose webhook is registered."""
    coordinator = make_key(stack.bootstrap, role="coordinator")
    wait_until(lambda: len(httpx.get(f"{stack.urls['requests']}/v1/offers", headers=bearer(coordinator))
                           .json().get("items", [])) >= 12, 120, "the offer board")
    commitment = httpx.get(f"{stack.urls['catalog']}/v1/commitments/{COMMITMENT}").json()
    agency = commitment["responsible_agencies"][0]
    agency_key = make_key(stack.bootstrap, role="partner", country=agency["country"], agency_id=agency["id"])
    wait_until(lambda: httpx.put(
        f"{stack.urls['notifications']}/v1/agencies/{agency['id']}/webhook", headers=bearer(agency_key),
        json={"url": f"{stack.receiver}/hook", "event_types": [REQUEST_SUBMITTED]}).status_code in (200, 201),
        60, "the webhook registration")
    keys = [make_key(stack.bootstrap, role="partner", country="TJ", agency_id=f"tj-bench-{number}")
            for number in range(key_count)]
    for key in keys:
        wait_until(lambda k=key: httpx.get(f"{stack.urls['requests']}/v1/requests",
                                           headers=bearer(k)).status_code == 200, 60, "a partner key")
    return keys, agency["id"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def run_phase(stack: Stack, chain: str, rate: int, seconds: float, keys: list[str]) -> tuple[Phase, dict]:
    phase = Phase(chain, rate)
    services = [stack.urls["requests"], stack.urls["notifications"]]
    before = hop_totals(services) if chain == "system" else {}
    cpu_before = stack.cpu_seconds()
    if chain == "system":
        def body(number: int) -> dict:
            return {"commitment_id": COMMITMENT, "title": f"Border post {rate}/{number}",
                    "description": "Equipment and training for a post on the Pyanj."}

        url = f"{stack.urls['requests']}/v1/requests"
        uvloop.run(open_loop(phase, url, seconds, body, lambda number: bearer(keys[number % len(keys)])))
    else:
        url = f"{stack.raw}/submit"
        uvloop.run(open_loop(phase, url, seconds, lambda _number: {"request_id": str(uuid.uuid4())},
                             lambda _number: {}))
    if phase.errors:  # reported with the results; only the 201s are followed to the receiver
        print(f"{chain} at {rate}/s: {len(phase.errors)} of {len(phase.errors) + len(phase.sent)} POSTs got no 201, "
              f"e.g. {phase.errors[:2]}", flush=True)
    seen = wait_arrived(stack.receiver, phase)
    phase.cpu = {name: used - cpu_before.get(name, 0.0) for name, used in stack.cpu_seconds().items()}
    if chain == "system":
        for hop, (total, count) in hop_totals(services).items():
            total_before, count_before = before.get(hop, (0.0, 0.0))
            if count > count_before:
                phase.hop_means[hop] = (total - total_before) / (count - count_before)
    return phase, seen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="20,50,100,200")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--keys", type=int, default=20, help="partner keys the requests are spread over")
    args = parser.parse_args()
    rates = [int(rate) for rate in args.rates.split(",")]

    scratch = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    stack = Stack(scratch)
    results = []
    try:
        stack.start()
        keys, agency = prepare(stack, args.keys)
        for chain in ("system", "raw"):  # warm both chains up
            run_phase(stack, chain, 10, 2, keys)
        for rate in rates:
            loads = []
            for chain in ("system", "raw"):
                phase, seen = run_phase(stack, chain, rate, args.seconds, keys)
                loads.append(load_average())
                results.append((phase, seen))
            print(f"{rate}/s done (load average {' / '.join(loads)})", flush=True)
        record_times = asyncio.run(record_timestamps(stack.bootstrap))
        times = hop_times(stack.databases["requests"], stack.databases["notifications"], record_times, agency)
    finally:
        stack.stop()
    report(results, times, rates)
    print(f"(logs and databases in {scratch})")


def report(results: list[tuple[Phase, dict]], times: dict, rates: list[int]) -> None:
    latencies: dict[tuple[str, int], list[float]] = {}
    for phase, seen in results:
        once = sum(1 for sent in phase.sent if len(seen.get(sent.request_id, [])) == 1)
        if once != len(phase.sent):
            print(f"!! {phase.chain} at {phase.rate}/s: {len(phase.sent) - once} requests arrived more than once")
        latencies[(phase.chain, phase.rate)] = [
            (seen[sent.request_id][0] - sent.answered) * 1000 for sent in phase.sent]
    print("\n| rate | system p50 | system p99 | raw chain p50 | raw chain p99 | p99 ratio |")
    print("|---|---|---|---|---|---|")
    for rate in rates:
        system, raw = latencies[("system", rate)], latencies[("raw", rate)]
        print(f"| {rate}/s | {percentile(system, 50):.1f} ms | {percentile(system, 99):.1f} ms | "
              f"{percentile(raw, 50):.1f} ms | {percentile(raw, 99):.1f} ms | "
              f"{percentile(system, 99) / percentile(raw, 99):.1f}x |")
    print("\nPer hop, system (p50 / p99, ms):\n")
    print("| rate | " + " | ".join(HOPS) + " |")
    print("|---" * (len(HOPS) + 1) + "|")
    for phase, seen in results:
        if phase.chain != "system":
            continue
        hops: dict[str, list[float]] = {hop: [] for hop in HOPS}
        for sent in phase.sent:
            moments = times.get(sent.request_id, {})
            points = [sent.sent, moments.get("staged"), sent.answered, moments.get("produced"),
                      moments.get("consumed"), moments.get("attempted"), seen[sent.request_id][0]]
            if any(point is None for point in points):
                continue
            for hop, start, end in zip(HOPS, points, points[1:], strict=False):
                hops[hop].append((end - start) * 1000)
        print(f"| {phase.rate}/s | " + " | ".join(
            f"{percentile(values, 50):.1f} / {percentile(values, 99):.1f}" for values in hops.values()) + " |")
    means = [(phase.rate, phase.hop_means) for phase, _ in results if phase.chain == "system" and phase.hop_means]
    if means:
        print("\nMean per hop from the services' caj_event_hop_latency_seconds (ms):\n")
        for rate, hop_means in means:
            print(f"- {rate}/s: " + ", ".join(f"{hop} {mean * 1000:.1f}" for hop, mean in sorted(hop_means.items())))
    print("\nCPU per request, by process (ms; user + system, over the phase including its drain):\n")
    names = sorted({name for phase, _ in results for name in phase.cpu})
    print("| chain | rate | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 2) + "|")
    for phase, _ in results:
        count = max(len(phase.sent), 1)
        print(f"| {phase.chain} | {phase.rate}/s | " + " | ".join(
            f"{phase.cpu[name] * 1000 / count:.1f}" if name in phase.cpu else "" for name in names) + " |")
    raw_rows = [f"{rate}/s submit {percentile(sub, 50):.1f} / {percentile(sub, 99):.1f}"
                for rate in rates for sub in [[(sent.answered - sent.sent) * 1000 for phase, _ in results
                                               if phase.chain == "raw" and phase.rate == rate
                                               for sent in phase.sent]]]
    print("\nRaw chain, POST to 201 (p50 / p99, ms): " + "; ".join(raw_rows))


if __name__ == "__main__":
    main()
