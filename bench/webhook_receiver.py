"""A fast webhook receiver for bench/notifications_drain.py: a raw ASGI app
(no framework) that answers 204 and counts what it receives.

GET /stats -> {"requests", "unique_ids", "first", "last"} (time.time() values).
"""

import json
import time

_seen: set[bytes] = set()
_stats = {"requests": 0, "first": None, "last": None}


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    if scope["method"] == "GET":
        body = json.dumps(_stats | {"unique_ids": len(_seen)}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    now = time.time()
    _stats["requests"] += 1
    _stats["first"] = _stats["first"] or now
    _stats["last"] = now
    _seen.add(next((value for name, value in scope["headers"] if name == b"webhook-id"), b""))
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
