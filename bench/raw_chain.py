"""The raw chain: the same hops as a request's way to its webhook, with no
service logic, the baseline of bench/e2e_latency.py.

1. `app` (raw ASGI, served by uvicorn like the services): a POST's JSON body
   is inserted into SQLite (WAL, synchronous=FULL, one commit per request,
   as durable as the requests service) and answered 201 once committed; then
   the body is produced to Kafka by aiokafka with the services' producer
   settings (acks=all, idempotence, linger 2 ms).
2. `python -m bench.raw_chain consume BOOTSTRAP TOPIC URL`: a consumer that
   POSTs each record's value to the receiver with aiohttp and commits its
   offsets automatically. No inbox, routing, claiming, signing or recording.

Settings of the app come from the environment: RAW_CHAIN_DATABASE (a file
path), RAW_CHAIN_BOOTSTRAP, RAW_CHAIN_TOPIC.
"""

import asyncio
import os
import sqlite3
import sys
import threading

import aiohttp
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener

_state: dict = {}


def _open_database(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE IF NOT EXISTS submitted (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    return connection


async def _lifespan(receive, send) -> None:
    message = await receive()
    assert message["type"] == "lifespan.startup"
    _state["database"] = _open_database(os.environ["RAW_CHAIN_DATABASE"])
    producer = AIOKafkaProducer(bootstrap_servers=os.environ["RAW_CHAIN_BOOTSTRAP"], acks="all",
                                enable_idempotence=True, linger_ms=2)
    await producer.start()
    _state["producer"] = producer
    _state["sends"] = set()
    await send({"type": "lifespan.startup.complete"})
    message = await receive()
    await producer.stop()
    _state["database"].close()
    await send({"type": "lifespan.shutdown.complete"})


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["method"] != "POST":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    database: sqlite3.Connection = _state["database"]
    # One transaction and its fsync per request, in a thread like the services' writes.
    await asyncio.to_thread(_insert, database, body)
    await send({"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})
    task = asyncio.create_task(_produce(body))
    _state["sends"].add(task)
    task.add_done_callback(_state["sends"].discard)


_LOCK = threading.Lock()  # uvicorn runs one loop, but the inserts run in threads


def _insert(database: sqlite3.Connection, body: bytes) -> None:
    with _LOCK:
        database.execute("BEGIN IMMEDIATE")
        database.execute("INSERT INTO submitted (body) VALUES (?)", (body.decode(),))
        database.execute("COMMIT")


async def _produce(body: bytes) -> None:
    producer: AIOKafkaProducer = _state["producer"]
    await producer.send_and_wait(os.environ["RAW_CHAIN_TOPIC"], value=body)


async def consume(bootstrap: str, topic: str, url: str) -> None:
    assigned = asyncio.Event()

    class Assigned(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked) -> None:
            pass

        async def on_partitions_assigned(self, partitions) -> None:
            assigned.set()

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id="raw-chain",
                                auto_offset_reset="latest", enable_auto_commit=True)
    consumer.subscribe([topic], listener=Assigned())
    await consumer.start()
    posts: set[asyncio.Task] = set()
    async with aiohttp.ClientSession() as client:
        async def post(value: bytes) -> None:
            async with client.post(url, data=value, headers={"content-type": "application/json"}) as response:
                await response.read()

        try:
            consuming = asyncio.create_task(_forward(consumer, post, posts))
            await assigned.wait()
            print("assigned", flush=True)
            await consuming
        finally:
            await consumer.stop()


async def _forward(consumer: AIOKafkaConsumer, post, posts: set) -> None:
    async for record in consumer:
        task = asyncio.create_task(post(record.value))
        posts.add(task)
        task.add_done_callback(posts.discard)


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "consume":
        sys.exit("usage: python -m bench.raw_chain consume BOOTSTRAP TOPIC URL")
    uvloop.run(consume(*sys.argv[2:]))
