"""Webhooks per the Standard Webhooks spec: endpoint URLs that are safe to
call, `whsec_` secrets, and the signed request for one delivery."""

import asyncio
import base64
import ipaddress
import json
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook

USER_AGENT = "caj-tracker-webhooks/1"


def new_secret() -> str:
    """A signing secret as Standard Webhooks writes them: whsec_ + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


# -- where we may send -----------------------------------------------------------
class UnsafeWebhookUrl(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def check_url_form(url: str) -> tuple[str, int]:
    """The host and port of a webhook URL, or UnsafeWebhookUrl: http(s) only,
    a host, no credentials in it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UnsafeWebhookUrl("webhook_url_invalid", f"Not a URL: {error}") from error
    if parts.scheme not in ("http", "https"):
        raise UnsafeWebhookUrl("webhook_url_scheme", "Webhook URLs must be http or https.")
    if not parts.hostname:
        raise UnsafeWebhookUrl("webhook_url_invalid", "The URL has no host.")
    if parts.username or parts.password:
        raise UnsafeWebhookUrl("webhook_url_invalid", "Credentials do not belong in a webhook URL.")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def refused_address(address: str) -> bool:
    """Not a public address: private, loopback, link-local (cloud metadata),
    shared, multicast, reserved or unspecified."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


class AddressGuard:
    """Refuses webhook URLs whose host resolves to a non-public address,
    unless private addresses are allowed (development). Checked when an
    endpoint is registered and again before each delivery, as DNS can change;
    answers are remembered for a minute."""

    def __init__(self, *, allow_private: bool, ttl_seconds: float = 60.0) -> None:
        self.allow_private = allow_private
        self.ttl_seconds = ttl_seconds
        self._resolved: dict[tuple[str, int], tuple[float, list[str]]] = {}

    async def check(self, url: str) -> None:
        host, port = check_url_form(url)
        if self.allow_private:
            return
        addresses = await self._addresses(host, port)
        bad = [address for address in addresses if refused_address(address)]
        if bad:
            raise UnsafeWebhookUrl("webhook_url_not_public",
                                   f"{host} resolves to {', '.join(sorted(set(bad)))}, which is not a public address.")

    async def _addresses(self, host: str, port: int) -> list[str]:
        now = time.monotonic()
        cached = self._resolved.get((host, port))
        if cached and cached[0] > now:
            return cached[1]
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise UnsafeWebhookUrl("webhook_url_unresolvable", f"{host} does not resolve: {error}") from error
        addresses = [info[4][0] for info in infos]
        if len(self._resolved) > 10_000:
            self._resolved.clear()
        self._resolved[(host, port)] = (now + self.ttl_seconds, addresses)
        return addresses


# -- what we send -----------------------------------------------------------------
@dataclass(frozen=True)
class SignedRequest:
    body: bytes
    headers: dict[str, str]


def webhook_body(*, event_type: str, event_time: datetime, notification: dict) -> bytes:
    """The body, the same bytes on every attempt: {type, timestamp, data} as
    the spec suggests."""
    return json.dumps(
        {"type": event_type, "timestamp": event_time.astimezone(UTC).isoformat(), "data": notification},
        sort_keys=True, separators=(",", ":"), default=str,
    ).encode()


def sign(*, delivery_id: str, body: bytes, secrets_in_use: list[str], now: datetime | None = None) -> SignedRequest:
    """Headers for one attempt: one `v1,` signature per secret in use (two
    during a rotation's grace period), space-separated."""
    timestamp = now or datetime.now(UTC)
    text = body.decode()
    signatures = " ".join(Webhook(secret).sign(msg_id=delivery_id, timestamp=timestamp, data=text)
                          for secret in secrets_in_use)
    return SignedRequest(body=body, headers={
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signatures,
    })
