"""App factory: `uvicorn --factory console_service.main:app`.

The console keeps no domain data. It follows `identity.keys` (as the services
do) to check sign-in keys and end the sessions of revoked keys, and calls the
services' APIs with the signed-in user's own key, so every rule is theirs.
"""

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from console_service import i18n
from console_service.api import ApiProblem, ServiceApi
from console_service.config import ConsoleSettings
from console_service.live import LIVE_TOPICS, LiveFeed, LiveHub
from console_service.pages import ROUTERS
from console_service.security import (
    ANONYMOUS_CSRF_COOKIE,
    SECURITY_HEADERS,
    CsrfRejected,
    cookies_secure,
    new_token,
)
from console_service.sessions import SESSION_COOKIE, SessionStore
from console_service.web import SignInRequired, render
from shared import metrics
from shared.http_middleware import ServiceMiddleware
from shared.identity import KeyStore
from shared.logging import configure_logging
from shared.retry import Backoff, retry
from shared.tasks import cancel_and_wait
from shared.topics import IDENTITY_KEYS, ensure_topics

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"


def create_app(settings: ConsoleSettings | None = None) -> FastAPI:
    settings = settings or ConsoleSettings()
    configure_logging(service=settings.service_name, level=settings.log_level, json=settings.log_json)
    key_store = KeyStore(settings.kafka_bootstrap_servers)
    sessions = SessionStore(key_store, lifetime_seconds=settings.session_lifetime_seconds)
    live_hub = LiveHub()
    live_feed = LiveFeed(settings.kafka_bootstrap_servers, live_hub)

    async def connect_to_kafka() -> None:
        async def start() -> None:
            await ensure_topics(settings.kafka_bootstrap_servers, [IDENTITY_KEYS, *LIVE_TOPICS], retry_for=5,
                                replication_factor=settings.kafka_replication_factor)
            if not key_store.running:
                await key_store.start()
            await live_feed.start()
        await retry(start, what="starting the key store and the live feed", backoff=Backoff(first=0.5, cap=10.0))

    async def sweep_sessions() -> None:
        while True:
            await asyncio.sleep(settings.session_sweep_seconds)
            if ended := sessions.sweep():
                log.info("ended %d sessions (expired or key revoked)", ended)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        connect = asyncio.create_task(connect_to_kafka(), name="console-kafka")
        sweeper = asyncio.create_task(sweep_sessions(), name="console-session-sweep")
        try:
            yield
        finally:
            await cancel_and_wait(sweeper)
            await cancel_and_wait(connect)
            await live_feed.stop()
            await key_store.stop()
            await app.state.api.aclose()

    app = FastAPI(title="caj-tracker console", description="Web pages over the services' APIs.",
                  version="1.0.0", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.key_store = key_store
    app.state.sessions = sessions
    app.state.live_hub = live_hub
    app.state.api = ServiceApi(
        base_urls={"catalog": settings.catalog_url, "requests": settings.requests_url,
                   "notifications": settings.notifications_url},
        timeout=settings.api_timeout_seconds,
    )

    @app.middleware("http")
    async def console_context(request: Request, call_next) -> Response:
        """Language, session and the anonymous CSRF token for this request;
        security headers and the cookies that remember them on the answer."""
        query_language = i18n.supported(request.query_params.get("lang"))
        language = i18n.choose_language(query=query_language, cookie=request.cookies.get(i18n.LANGUAGE_COOKIE),
                                        accept_language=request.headers.get("accept-language"))
        language_token = i18n.current_language.set(language)
        request.state.session = sessions.get(request.cookies.get(SESSION_COOKIE))
        anonymous_csrf = request.cookies.get(ANONYMOUS_CSRF_COOKIE)
        request.state.anonymous_csrf = anonymous_csrf or new_token()
        try:
            response = await call_next(request)
        finally:
            i18n.current_language.reset(language_token)
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["Content-Language"] = language
        secure = cookies_secure(request, settings.force_secure_cookies)
        if query_language:  # the switch is remembered
            response.set_cookie(i18n.LANGUAGE_COOKIE, query_language, max_age=365 * 86400, httponly=True,
                                samesite="strict", secure=secure)
        if anonymous_csrf is None:
            response.set_cookie(ANONYMOUS_CSRF_COOKIE, request.state.anonymous_csrf, httponly=True,
                                samesite="strict", secure=secure)
        return response

    app.add_middleware(ServiceMiddleware, service=settings.service_name, max_body_bytes=settings.max_body_bytes)

    @app.exception_handler(SignInRequired)
    async def sign_in_required(request: Request, _error: SignInRequired) -> Response:
        return RedirectResponse(f"/sign-in?next={request.url.path}", status_code=303)

    @app.exception_handler(CsrfRejected)
    async def csrf_rejected(request: Request, _error: CsrfRejected) -> Response:
        return error_page(request, 403, reason="csrf")

    @app.exception_handler(ApiProblem)
    async def api_problem(request: Request, problem: ApiProblem) -> Response:
        # A page that could not get its data: 403 and 404 keep their meaning.
        status = problem.status if problem.status in (403, 404) else 502
        return error_page(request, status, problem=problem)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        return error_page(request, error.status_code)

    @app.get("/livez", include_in_schema=False)
    async def livez() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        keys_ready = key_store.caught_up and key_store.running
        checks: dict[str, dict[str, Any]] = {
            "key_store": {"ok": keys_ready, "detail": "caught up" if keys_ready else "keys still loading"},
            "live_feed": {"ok": live_feed.running,
                          "detail": f"{live_hub.stream_count} open streams" if live_feed.running else "not running"},
        }
        ready = all(check["ok"] for check in checks.values())
        return JSONResponse({"status": "ready" if ready else "not_ready", "checks": checks},
                            status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return metrics.metrics_response()

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for router in ROUTERS:
        app.include_router(router)
    return app


def error_page(request: Request, status: int, *, reason: str | None = None,
               problem: ApiProblem | None = None) -> Response:
    return render(request, "error.html", {"status": status, "reason": reason, "problem": problem},
                  status_code=status)


def app() -> FastAPI:
    return create_app()
