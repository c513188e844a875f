"""The pages' API client: the user's key goes with each call, and refusals
come back as ApiProblem, never as JSON (unit tests over httpx.MockTransport)."""

import httpx
import pytest

from console_service.api import ApiProblem, ServiceApi

KEY = "caj_0123456789abcdef_secret"


def client(handler) -> ServiceApi:
    return ServiceApi(base_urls={"catalog": "http://catalog.test", "requests": "http://requests.test",
                                 "notifications": "http://notifications.test"},
                      timeout=5, transport=httpx.MockTransport(handler))


async def test_the_users_key_and_the_query_go_with_the_call():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": [], "total": 0})

    api = client(handler)
    try:
        body = await api.get("requests", "/v1/requests", key=KEY, params={"status": "submitted", "country": None})
    finally:
        await api.aclose()
    assert body == {"items": [], "total": 0}
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert str(seen[0].url) == "http://requests.test/v1/requests?status=submitted"


async def test_a_problem_json_answer_becomes_an_api_problem():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, headers={"content-type": "application/problem+json"}, json={
            "type": "about:blank", "title": "Transition not allowed", "status": 409,
            "detail": "A fulfilled request cannot be withdrawn.", "reason": "invalid_transition"})

    api = client(handler)
    with pytest.raises(ApiProblem) as raised:
        await api.post("requests", "/v1/requests/r1/transitions", key=KEY, json={"to": "withdrawn"})
    await api.aclose()
    assert raised.value.status == 409
    assert raised.value.reason == "invalid_transition"
    assert raised.value.title == "Transition not allowed"
    assert raised.value.detail == "A fulfilled request cannot be withdrawn."


async def test_an_answer_that_is_not_json_still_becomes_an_api_problem():
    api = client(lambda request: httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(ApiProblem) as raised:
        await api.get("catalog", "/v1/plans", key=KEY)
    await api.aclose()
    assert raised.value.status == 502 and raised.value.reason == "http_502"


async def test_an_unreachable_service_is_a_503_problem():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    api = client(handler)
    with pytest.raises(ApiProblem) as raised:
        await api.get("notifications", "/v1/inbox", key=KEY)
    await api.aclose()
    assert raised.value.status == 503 and raised.value.reason == "service_unreachable"
    assert "notifications" in raised.value.title
