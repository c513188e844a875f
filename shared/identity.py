"""Who is calling: API keys, roles, and the per-key rate limit.

Keys look like `caj_<key id>_<secret>`. Services keep the current key records
(from the compacted `identity.keys` topic) in memory and compare the hash of
the presented secret in constant time. Roles:
- partner: acts for one agency of one country;
- coordinator: reviews requests and records agreements and evidence;
- operator: watches the system.
"""

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import Request

from shared.contracts.identity import AGENCY_REGISTERED, API_KEY_CHANGED, AgencyRecord, ApiKeyRecord, Role
from shared.errors import Forbidden, RateLimited, Unauthenticated, Unavailable
from shared.events import InvalidEvent, from_kafka
from shared.kafka import read_whole_topics
from shared.topics import IDENTITY_KEYS
from shared.workers import SupervisedWorker

log = logging.getLogger(__name__)

KEY_PREFIX = "caj_"


@dataclass(frozen=True)
class Principal:
    key_id: str
    role: Role
    agency_id: str | None
    country: str | None


def new_api_key() -> tuple[str, str, str]:
    """A fresh key: (key_id, the full key to show once, sha256 of the secret)."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return key_id, f"{KEY_PREFIX}{key_id}_{secret}", hash_secret(secret)


def hash_secret(secret: str) -> str:
    # The secret is 256 random bits: a plain hash cannot be brute-forced, and
    # it keeps verification cheap enough for every request.
    return hashlib.sha256(secret.encode()).hexdigest()


def split_api_key(presented: str) -> tuple[str, str] | None:
    if not presented.startswith(KEY_PREFIX):
        return None
    key_id, _, secret = presented[len(KEY_PREFIX):].partition("_")
    if len(key_id) != 16 or not secret:
        return None
    return key_id, secret


class KeyStore:
    """The current API keys and agencies, read from `identity.keys`.

    Every replica reads the whole topic (no consumer group), from the start,
    and keeps following it: a revocation reaches every service within the
    time it takes to fetch one record.
    """

    def __init__(self, bootstrap_servers: str, *, topic: str = IDENTITY_KEYS.name) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.keys: dict[str, ApiKeyRecord] = {}
        self.agencies: dict[str, AgencyRecord] = {}
        self.caught_up = False
        self._consumer: AIOKafkaConsumer | None = None
        self._end_offsets: dict[TopicPartition, int] = {}
        self.worker = SupervisedWorker("key-store", self._follow)

    async def start(self) -> None:
        self._consumer = await read_whole_topics(self.bootstrap_servers, [self.topic], client_id="caj-keystore")
        partitions = sorted(self._consumer.assignment())
        self._end_offsets = await self._consumer.end_offsets(partitions)
        if all(offset == 0 for offset in self._end_offsets.values()):
            self.caught_up = True
        self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()
        if self._consumer:
            await self._consumer.stop()

    @property
    def running(self) -> bool:
        return self.worker.running

    async def _follow(self) -> None:
        """Apply records as they come (a restart goes on from the position reached)."""
        assert self._consumer is not None
        end_offsets = self._end_offsets
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    self.apply(record.key, record.value, record.headers)
            if not self.caught_up:
                positions = {tp: await self._consumer.position(tp) for tp in end_offsets}
                self.caught_up = all(positions[tp] >= end for tp, end in end_offsets.items())

    def apply(self, key: bytes | None, value: bytes | None, headers) -> None:
        try:
            event = from_kafka(key=key, value=value, headers=headers)
            if event.get_type() == API_KEY_CHANGED:
                record = ApiKeyRecord.model_validate(event.get_data())
                self.keys[record.key_id] = record
            elif event.get_type() == AGENCY_REGISTERED:
                agency = AgencyRecord.model_validate(event.get_data())
                self.agencies[agency.agency_id] = agency
        except (InvalidEvent, ValueError) as error:
            log.error("ignoring a malformed identity record %r: %s", key, error)

    def authenticate(self, presented: str) -> Principal | None:
        parts = split_api_key(presented)
        if parts is None:
            return None
        key_id, secret = parts
        record = self.keys.get(key_id)
        if record is None or record.revoked_at is not None:
            return None
        if not hmac.compare_digest(record.secret_sha256, hash_secret(secret)):
            return None
        return Principal(key_id=record.key_id, role=record.role, agency_id=record.agency_id, country=record.country)


class RateLimiter:
    """A token bucket per key: `rate` requests a second, bursts up to `burst`."""

    def __init__(self, *, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def retry_after(self, key: str) -> float:
        """0 when the call may go ahead (and is counted), else seconds to wait."""
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate


def _presented_key(request: Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return request.headers.get("x-api-key")


async def authenticate_request(request: Request) -> Principal:
    """The caller, or 401; then the per-key rate limit, or 429. Async: it only
    reads memory, and a sync dependency would cost a thread-pool hop."""
    key_store: KeyStore | None = getattr(request.app.state, "key_store", None)
    presented = _presented_key(request)
    if not presented:
        raise _unauthenticated("An API key is required (Authorization: Bearer <key>)")
    if key_store is None or not key_store.caught_up:
        raise Unavailable("identity_loading", "Keys are still loading", "Try again in a moment.")
    principal = key_store.authenticate(presented)
    if principal is None:
        raise _unauthenticated("The API key is not valid or has been revoked")
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        wait = limiter.retry_after(principal.key_id)
        if wait > 0:
            raise RateLimited("rate_limited", "Too many requests",
                              f"This key may make {limiter.rate:g} requests a second; retry later.",
                              retry_after=max(1, int(wait + 0.999)))
    request.state.principal = principal
    return principal


def _unauthenticated(detail: str) -> Unauthenticated:
    return Unauthenticated("unauthenticated", "Authentication required", detail)


def require_roles(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        raise Forbidden("forbidden", "Not allowed for this role",
                        f"This needs the role {' or '.join(roles)}; the key's role is {principal.role}.")
