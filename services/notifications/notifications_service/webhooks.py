"""Webhooks per the Standard Webhooks spec: endpoint URLs that are safe to
call, `whsec_` secrets, and the signed request for one delivery."""

import asyncio
import base64
import functools
import ipaddress
import json
import secrets
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver
from standardwebhooks.webhooks import Webhook

USER_AGENT = "caj-tracker-webhooks/1"
# Only ever a webhook body (an agency asked for a test delivery), never an event on a topic.
WEBHOOK_TEST = "org.caj-tracker.notifications.webhook.test.v1"


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


# IPv6 prefixes whose last 32 bits are an IPv4 address: NAT64 (well-known and
# local-use), IPv4-translated, IPv4-compatible.
_CARRY_IPV4 = [
    ipaddress.ip_network(prefix) for prefix in ("64:ff9b::/96", "64:ff9b:1::/48", "::ffff:0:0:0/96", "::/96")
]


def refused_address(address: str) -> bool:
    """Not a public address: private, loopback, link-local (cloud metadata),
    shared, multicast, reserved or unspecified; for IPv6 also the IPv4
    addresses carried inside it (mapped, compatible, NAT64, 6to4, Teredo)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
        if any(ip in prefix for prefix in _CARRY_IPV4) and int(ip) > 1:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(inner is not None and refused_address(str(inner)) for inner in embedded):
            return True
        if ip.is_site_local:
            return True
    return not ip.is_global or ip.is_multicast


def _literal_ip(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


class RefusedAddress(OSError):
    """A webhook host resolved to an address we do not call."""


class AddressGuard:
    """Refuses webhook URLs whose host is or resolves to a non-public address,
    unless private addresses are allowed (development).

    `check` runs when an endpoint is registered. When sending, the resolver
    (`resolver()`) checks the very addresses the connection then uses, so a
    name cannot resolve to a public address for the check and to a private
    one for the connection (DNS rebinding); literal IPs, which aiohttp does
    not resolve, are checked by `check_literal`."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private

    async def check(self, url: str) -> None:
        host, port = check_url_form(url)
        if self.allow_private:
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as error:
            raise UnsafeWebhookUrl("webhook_url_unresolvable", f"{host} does not resolve: {error}") from error
        bad = sorted({address for address in (str(info[4][0]) for info in infos) if refused_address(address)})
        if bad:
            raise UnsafeWebhookUrl("webhook_url_not_public",
                                   f"{host} resolves to {', '.join(bad)}, which is not a public address.")

    def check_literal(self, url: str) -> None:
        refusal = _literal_refusal(url, self.allow_private)
        if refusal is not None:
            raise UnsafeWebhookUrl(*refusal)

    def resolver(self) -> AbstractResolver:
        return DefaultResolver() if self.allow_private else _PublicOnlyResolver()


@functools.lru_cache(maxsize=1024)
def _literal_refusal(url: str, allow_private: bool) -> tuple[str, str] | None:
    """(reason, detail) when `url` may not be called; cached, as it is asked
    before every attempt and a URL's answer never changes."""
    try:
        host, _port = check_url_form(url)
    except UnsafeWebhookUrl as error:
        return error.reason, error.detail
    literal = _literal_ip(host)
    if not allow_private and literal is not None and refused_address(literal):
        return "webhook_url_not_public", f"{literal} is not a public address."
    return None


class _PublicOnlyResolver(AbstractResolver):
    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        infos = await self._inner.resolve(host, port, family)
        bad = sorted({info["host"] for info in infos if refused_address(info["host"])})
        if bad:
            raise RefusedAddress(f"{host} resolves to {', '.join(bad)}, which is not a public address")
        return infos

    async def close(self) -> None:
        await self._inner.close()


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


@functools.lru_cache(maxsize=4096)
def _signer(secret: str) -> Webhook:
    return Webhook(secret)  # decodes the secret once, not on every attempt


def sign(*, delivery_id: str, body: bytes, secrets_in_use: list[str], now: datetime | None = None) -> SignedRequest:
    """Headers for one attempt: one `v1,` signature per secret in use (two
    during a rotation's grace period), space-separated."""
    timestamp = now or datetime.now(UTC)
    text = body.decode()
    signatures = " ".join(_signer(secret).sign(msg_id=delivery_id, timestamp=timestamp, data=text)
                          for secret in secrets_in_use)
    return SignedRequest(body=body, headers={
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signatures,
    })
