"""What routes take as typed parameters, instead of reaching into the app:

    async def handler(runtime: Runtime, caller: Caller, page: Page): ...

Dependencies that only read memory are `async`: a sync one would cost a
thread-pool hop per request."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlmodel import Session

from shared.identity import Principal, authenticate_request
from shared.service import ServiceRuntime
from shared.settings import ServiceSettings

MAX_PAGE_SIZE = 100


async def service_runtime(request: Request) -> ServiceRuntime:
    return request.app.state.runtime


Runtime = Annotated[ServiceRuntime, Depends(service_runtime)]


async def service_settings(runtime: Runtime) -> ServiceSettings:
    """The service's settings; a service aliases it with its own settings class:
    `Annotated[NotificationsSettings, Depends(service_settings)]`."""
    return runtime.settings

# The authenticated caller, within its key's rate limit.
Caller = Annotated[Principal, Depends(authenticate_request)]


@dataclass(frozen=True)
class PageParams:
    """A page of a list: at most `limit` items, after the first `offset`."""

    limit: int
    offset: int


async def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


Page = Annotated[PageParams, Depends(page_params)]


def read_session(runtime: ServiceRuntime) -> Session:
    """A session on the read engine; objects stay usable after it closes."""
    return Session(runtime.read_engine, expire_on_commit=False)
