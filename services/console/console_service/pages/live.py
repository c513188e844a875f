"""`GET /live`: the signed-in user's stream of server-sent events.

Each event names what changed (`request-submitted`, `request-status-changed`,
...) and which request; `static/live.js` then reloads the part of the page
that shows it, through the page's own route, so the data still comes from the
APIs with the user's key. The stream ends when the session does.
"""

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from console_service.live import LiveHub
from console_service.web import SignedIn

router = APIRouter()

HEARTBEAT_SECONDS = 15.0


@router.get("/live")
async def live_stream(request: Request, session: SignedIn) -> StreamingResponse:
    hub: LiveHub = request.app.state.live_hub
    sessions = request.app.state.sessions
    stream = hub.open(session.principal)

    async def events() -> AsyncIterator[str]:
        try:
            # The browser retries after this many milliseconds when the stream ends.
            yield "retry: 2000\n: connected\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(stream.queue.get(), timeout=HEARTBEAT_SECONDS)
                except TimeoutError:
                    if stream.overflowed or sessions.get(session.session_id) is None:
                        return
                    yield ": heartbeat\n\n"
                    continue
                if sessions.get(session.session_id) is None:
                    return  # signed out, expired or revoked: nothing more for this browser
                # What else is waiting goes in the same write: a burst costs few sends.
                waiting = [event] + [stream.queue.get_nowait() for _ in range(min(stream.queue.qsize(), 500))]
                yield "".join(item.server_sent_event for item in waiting)
        finally:
            hub.close(stream)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
