"""The webhook receiver of bench/e2e_latency.py: a raw ASGI app (no
framework) that answers 204 and notes when each request id arrived.

A body is either the raw chain's `{"request_id": ...}` or a notifications
webhook, whose notification payload carries the request id.
GET /arrivals -> {request id: [time.time() of each arrival]}.
"""

import json
import time
from collections import defaultdict

_arrivals: defaultdict[str, list[float]] = defaultdict(list)


def _request_id(body: bytes) -> str:
    document = json.loads(body)
    if "request_id" in document:
        return document["request_id"]
    return document["data"]["payload"]["request_id"]


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    if scope["method"] == "GET":
        body = json.dumps(_arrivals).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    arrived = time.time()
    _arrivals[_request_id(b"".join(chunks))].append(arrived)
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
