"""The one way pages call the services: an httpx client that sends the
signed-in user's key and turns problem+json answers into `ApiProblem`.

Pages never show an API's JSON: they catch `ApiProblem` and show its title and
detail in words next to the form that caused it (or as a 403/404 page).
"""

from dataclasses import dataclass
from typing import Any, Literal

import httpx

Service = Literal["catalog", "requests", "notifications"]


@dataclass
class ApiProblem(Exception):
    """An API said no (4xx/5xx), or could not be reached (status 503)."""

    status: int
    reason: str
    title: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.status} {self.reason}: {self.title}"


class ServiceApi:
    def __init__(self, *, base_urls: dict[Service, str], timeout: float,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_urls = base_urls
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def get(self, service: Service, path: str, *, key: str, params: dict[str, Any] | None = None) -> Any:
        return await self._call("GET", service, path, key=key, params=params)

    async def get_text(self, service: Service, path: str, *, key: str, params: dict[str, Any] | None = None) -> str:
        """A plain-text or CSV answer (a plan's source, a report's CSV)."""
        return await self._call("GET", service, path, key=key, params=params, as_text=True)

    async def post(self, service: Service, path: str, *, key: str, json: Any = None,
                   headers: dict[str, str] | None = None) -> Any:
        return await self._call("POST", service, path, key=key, json=json, headers=headers)

    async def put(self, service: Service, path: str, *, key: str, json: Any = None) -> Any:
        return await self._call("PUT", service, path, key=key, json=json)

    async def _call(self, method: str, service: Service, path: str, *, key: str, params: dict[str, Any] | None = None,
                    json: Any = None, headers: dict[str, str] | None = None, as_text: bool = False) -> Any:
        url = self.base_urls[service].rstrip("/") + path
        sent_headers = {"Authorization": f"Bearer {key}", "Accept": "application/json", **(headers or {})}
        query = {name: value for name, value in (params or {}).items() if value is not None}
        try:
            response = await self._client.request(method, url, params=query, json=json, headers=sent_headers)
        except httpx.HTTPError as error:
            raise ApiProblem(503, "service_unreachable", f"The {service} service did not answer",
                             type(error).__name__) from error
        if response.status_code >= 400:
            raise problem_from(response)
        if as_text:
            return response.text
        if response.status_code == 204 or not response.content:
            return None
        return response.json()


def problem_from(response: httpx.Response) -> ApiProblem:
    """The problem+json body as an `ApiProblem`; a body of another kind still
    gives one, named by its status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return ApiProblem(response.status_code, f"http_{response.status_code}", response.reason_phrase or "Error")
    return ApiProblem(
        status=response.status_code,
        reason=str(body.get("reason") or f"http_{response.status_code}"),
        title=str(body.get("title") or response.reason_phrase or "Error"),
        detail=str(body.get("detail") or ""),
    )
