"""Webhook delivery without the service: the production schedule, which
addresses are refused, signatures a receiver can check, and single attempts
against a real local receiver. (The schedule's cases: test_schedule.py.)"""

from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from notifications_service.config import PRODUCTION_RETRY_SCHEDULE, NotificationsSettings
from notifications_service.delivery import Claimed, send_attempt, webhook_client
from notifications_service.states import AttemptOutcome
from notifications_service.webhooks import (
    AddressGuard,
    UnsafeWebhookUrl,
    check_url_form,
    new_secret,
    refused_address,
    sign,
    webhook_body,
)
from tests.notifications.receiver import Receiver, Reply


def test_the_production_schedule_spans_hours_and_grows():
    assert NotificationsSettings().webhook_retry_schedule_seconds == PRODUCTION_RETRY_SCHEDULE
    assert sum(PRODUCTION_RETRY_SCHEDULE) > 24 * 3600
    assert all(a <= b for a, b in zip(PRODUCTION_RETRY_SCHEDULE, PRODUCTION_RETRY_SCHEDULE[1:], strict=False))


def test_negative_delays_are_refused():
    with pytest.raises(ValueError):
        NotificationsSettings(webhook_retry_schedule_seconds=[1, -1])


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "224.0.0.1",
])
def test_non_public_addresses_are_refused(address):
    assert refused_address(address)


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address):
    assert not refused_address(address)


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://example.org/hook", "webhook_url_scheme"),
    ("file:///etc/passwd", "webhook_url_scheme"),
    ("https://user:pw@example.org/hook", "webhook_url_invalid"),
    ("https:///hook", "webhook_url_invalid"),
    ("http://example.org:99999/", "webhook_url_invalid"),
])
def test_urls_of_the_wrong_form_are_refused(url, reason):
    with pytest.raises(UnsafeWebhookUrl) as refused:
        check_url_form(url)
    assert refused.value.reason == reason


async def test_a_name_that_resolves_to_loopback_is_refused_unless_allowed():
    with pytest.raises(UnsafeWebhookUrl) as refused:
        await AddressGuard(allow_private=False).check("http://localhost:8080/hook")
    assert refused.value.reason == "webhook_url_not_public"
    await AddressGuard(allow_private=True).check("http://localhost:8080/hook")
    with pytest.raises(UnsafeWebhookUrl):
        await AddressGuard(allow_private=True).check("gopher://localhost/")


def test_signatures_verify_with_the_standardwebhooks_package():
    secret, old = new_secret(), new_secret()
    body = webhook_body(event_type="t.v1", event_time=datetime.now(UTC), notification={"n": 1})
    signed = sign(delivery_id="msg_1", body=body, secrets_in_use=[secret, old])
    payload = Webhook(secret).verify(body, signed.headers)
    assert payload["type"] == "t.v1" and payload["data"] == {"n": 1}
    assert signed.headers["webhook-id"] == "msg_1"
    assert Webhook(old).verify(body, signed.headers)["data"] == {"n": 1}
    stale = sign(delivery_id="msg_1", body=body, secrets_in_use=[secret], now=datetime.now(UTC) - timedelta(hours=1))
    with pytest.raises(Exception, match="too old"):
        Webhook(secret).verify(body, stale.headers)


def _claimed(url: str) -> Claimed:
    return Claimed(delivery_id="msg_send_test", notification_id="n-1", agency_id="tj-send-test",
                   event_type="org.caj-tracker.requests.request.status-changed.v1",
                   event_time=datetime.now(UTC), attempts=0, schedule_step=0, body=b'{"type": "t"}',
                   url=url, secrets_in_use=(new_secret(),))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["literal", "name"])
async def test_a_private_address_is_refused_when_sending_and_nothing_is_sent(host):
    """Registration checks the URL; the attempt checks it again, the name at
    connection time (an address that changed since, DNS rebinding), and
    nothing reaches the receiver. With private addresses allowed, the same
    attempt is delivered."""
    settings = NotificationsSettings(webhook_allow_private_addresses=False, webhook_timeout_seconds=5)
    with Receiver() as receiver:
        url = receiver.script("/private").replace("127.0.0.1", host)
        refusing = AddressGuard(allow_private=False)
        async with webhook_client(settings, refusing) as client:
            outcome = await send_attempt(client, refusing, _claimed(url))
        assert outcome.outcome == "refused_address" and outcome.status_code is None
        assert "not a public address" in outcome.error
        assert receiver.received("/private") == []

        allowing = AddressGuard(allow_private=True)
        async with webhook_client(settings, allowing) as client:
            outcome = await send_attempt(client, allowing, _claimed(url))
        assert outcome.outcome == "delivered" and outcome.status_code == 200
        assert len(receiver.received("/private")) == 1


async def test_redirects_are_not_followed():
    settings = NotificationsSettings(webhook_allow_private_addresses=True, webhook_timeout_seconds=5)
    guard = AddressGuard(allow_private=True)
    with Receiver() as receiver:
        url = receiver.script("/moved", Reply(307, {"Location": receiver.base_url + "/elsewhere"}))
        async with webhook_client(settings, guard) as client:
            outcome = await send_attempt(client, guard, _claimed(url))
        assert outcome.outcome == "failed" and outcome.status_code == 307
        assert receiver.received("/elsewhere") == []


async def test_a_receiver_slower_than_the_timeout_is_cut_off_and_the_attempt_failed():
    settings = NotificationsSettings(webhook_allow_private_addresses=True, webhook_timeout_seconds=0.5)
    guard = AddressGuard(allow_private=True)
    with Receiver() as receiver:
        url = receiver.script("/slow", Reply(200, delay=2.0))
        async with webhook_client(settings, guard) as client:
            outcome = await send_attempt(client, guard, _claimed(url))
    assert outcome.outcome == AttemptOutcome.FAILED and outcome.status_code is None
    assert outcome.error == "timeout after 0.5 s"
    assert 400 <= outcome.duration_ms < 1500, "the attempt was cut at the timeout"
