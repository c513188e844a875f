"""One HTTP attempt at a claimed delivery: checked, signed, sent, and judged
into an `Outcome` (never an exception)."""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import aiohttp
from opentelemetry.trace import SpanKind, Status, StatusCode

from notifications_service.config import NotificationsSettings
from notifications_service.delivery.schedule import parse_retry_after
from notifications_service.states import AttemptOutcome
from notifications_service.webhooks import USER_AGENT, AddressGuard, RefusedAddress, UnsafeWebhookUrl, sign
from shared.messaging_models import utcnow
from shared.tracing import continuing, current_trace_headers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claimed:
    """A due delivery with what sending it needs."""

    delivery_id: str
    notification_id: str
    agency_id: str
    event_type: str
    event_time: datetime
    attempts: int
    schedule_step: int
    body: bytes
    url: str | None  # None: the endpoint is gone or disabled
    secrets_in_use: tuple[str, ...]
    lease_until: datetime | None = None  # this dispatcher's claim, as written
    due_at: datetime | None = None  # when the attempt was due
    claimed_at: datetime | None = None
    # The trace the delivery continues (None for deliveries made before traces were kept).
    traceparent: str | None = None
    tracestate: str | None = None


@dataclass(frozen=True)
class Outcome:
    claimed: Claimed
    outcome: AttemptOutcome
    status_code: int | None
    error: str | None
    duration_ms: float
    attempted_at: datetime
    retry_after: float | None = None


def webhook_client(settings: NotificationsSettings, guard: AddressGuard) -> aiohttp.ClientSession:
    """The dispatcher's HTTP client. aiohttp, not httpx: at 64 concurrent
    requests httpx managed about 260 POSTs/s here, aiohttp about 10,000
    (BENCHMARKS.md). Its total timeout bounds a whole attempt, however slowly
    the receiver trickles its answer; its resolver refuses private addresses
    unless they are allowed, at connection time (no DNS rebinding)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=settings.delivery_concurrency, resolver=guard.resolver()),
        timeout=aiohttp.ClientTimeout(total=settings.webhook_timeout_seconds),
        headers={"user-agent": USER_AGENT}, auto_decompress=False,
    )


def judge_answer(status: int, retry_after_header: str | None, *,
                 now: datetime) -> tuple[AttemptOutcome, str | None, float | None]:
    """(outcome, error, Retry-After seconds) for the receiver's HTTP status:
    2xx delivered, 410 gone, anything else failed; Retry-After counts only
    on 429 and 503."""
    if 200 <= status < 300:
        return AttemptOutcome.DELIVERED, None, None
    if status == 410:
        return AttemptOutcome.ENDPOINT_GONE, "the receiver answered 410 Gone", None
    retry_after = parse_retry_after(retry_after_header, now=now) if status in (429, 503) else None
    return AttemptOutcome.FAILED, f"HTTP {status}", retry_after


async def send_attempt(client: aiohttp.ClientSession, guard: AddressGuard, claimed: Claimed, *,
                       clock: Callable[[], datetime] = utcnow) -> Outcome:
    """One attempt in a client span of the delivery's trace, whose context
    goes to the receiver as `traceparent`; logged, with its trace id."""
    with continuing(claimed.traceparent, claimed.tracestate, "webhook POST", kind=SpanKind.CLIENT,
                    attributes={"http.request.method": "POST", "webhook.delivery_id": claimed.delivery_id,
                                "webhook.agency_id": claimed.agency_id}) as span:
        outcome = await _attempt(client, guard, claimed, clock=clock)
        if outcome.status_code is not None:
            span.set_attribute("http.response.status_code", outcome.status_code)
        if outcome.outcome != AttemptOutcome.DELIVERED:
            span.set_status(Status(StatusCode.ERROR, outcome.outcome))
        log.info("webhook delivery %s to %s: %s%s in %.1f ms", claimed.delivery_id, claimed.agency_id,
                 outcome.outcome, f" ({outcome.status_code})" if outcome.status_code is not None else "",
                 outcome.duration_ms, extra={"delivery_id": claimed.delivery_id, "outcome": outcome.outcome})
        return outcome


async def _attempt(client: aiohttp.ClientSession, guard: AddressGuard, claimed: Claimed, *,
                   clock: Callable[[], datetime]) -> Outcome:
    """One attempt, within the client's timeout; whatever happens, an outcome
    (a timeout or a broken connection is a failure like any other)."""
    started = time.perf_counter()
    attempted_at = clock()

    def ended(outcome: AttemptOutcome, status: int | None = None, error: str | None = None,
              retry_after: float | None = None) -> Outcome:
        return Outcome(claimed, outcome, status, error, round((time.perf_counter() - started) * 1000, 2),
                       attempted_at, retry_after)

    if claimed.url is None:
        return ended(AttemptOutcome.ENDPOINT_DISABLED, error="the agency has no enabled webhook endpoint")
    try:
        guard.check_literal(claimed.url)
    except UnsafeWebhookUrl as error:
        return ended(AttemptOutcome.REFUSED_ADDRESS, error=error.detail[:500])
    signed = sign(delivery_id=claimed.delivery_id, body=claimed.body, secrets_in_use=list(claimed.secrets_in_use))
    traceparent, tracestate = current_trace_headers()  # the attempt's span: same trace as the event
    if traceparent:
        signed.headers["traceparent"] = traceparent
        if tracestate:
            signed.headers["tracestate"] = tracestate
    try:
        # Redirects are not followed: the checked URL is the one called.
        async with client.post(claimed.url, data=signed.body, headers=signed.headers,
                               allow_redirects=False) as response:
            status = response.status
            retry_after_header = response.headers.get("retry-after")
            await _drain(response)
    except TimeoutError:
        return ended(AttemptOutcome.FAILED, error=f"timeout after {client.timeout.total:g} s")
    except aiohttp.ClientConnectorError as error:
        if isinstance(error.os_error, RefusedAddress):
            return ended(AttemptOutcome.REFUSED_ADDRESS, error=str(error.os_error)[:500])
        return ended(AttemptOutcome.FAILED, error=f"{type(error).__name__}: {error}"[:500])
    except Exception as error:  # a bad URL, a broken answer: a failure like any other, never a lost attempt
        return ended(AttemptOutcome.FAILED, error=f"{type(error).__name__}: {error}"[:500])
    outcome, reason, retry_after = judge_answer(status, retry_after_header, now=clock())
    return ended(outcome, status, reason, retry_after)


async def _drain(response: aiohttp.ClientResponse, limit: int = 65536) -> None:
    """Read a small answer so its connection can be reused; a larger one is
    cut off (the connection is then closed), as nobody reads it."""
    received = 0
    while received <= limit and (chunk := await response.content.read(limit)):
        received += len(chunk)
