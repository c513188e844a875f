"""RFC 9457 problem+json errors with a machine-readable `reason`: domain
errors (shared/errors.py) are answered here, as are FastAPI's own."""

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    Unauthenticated,
    Unavailable,
)

PROBLEM_JSON = "application/problem+json"

# The one place a kind of domain error becomes an HTTP status.
STATUS_OF_ERROR: dict[type[DomainError], int] = {
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Invalid: 422,
    RateLimited: 429,
    Unavailable: 503,
}


def status_of(error: DomainError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS_OF_ERROR:
            return STATUS_OF_ERROR[kind]
    return 400  # a DomainError of no known kind: the caller's mistake, not ours


def _headers_of(error: DomainError) -> dict[str, str] | None:
    headers = {}
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="caj-tracker"'
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return headers or None


def problem_response(
    *, status: int, reason: str, title: str, detail: str | None = None, instance: str | None = None,
    headers: dict[str, str] | None = None, **extensions: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:caj-tracker:problem:{reason}", "title": title, "status": status, "reason": reason,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extensions)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


_REASONS_BY_STATUS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, error: DomainError) -> JSONResponse:
        return problem_response(
            status=status_of(error), reason=error.reason, title=error.title, detail=error.detail,
            instance=request.url.path, headers=_headers_of(error), **error.extensions,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "location": [str(part) for part in item.get("loc", ())],
                "message": item.get("msg"),
                "type": item.get("type"),
            }
            for item in error.errors()
        ]
        return problem_response(
            status=422, reason="validation_failed", title="The request is not valid",
            detail="; ".join(f"{'.'.join(e['location'])}: {e['message']}" for e in errors),
            instance=request.url.path, errors=errors,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        # Logged with its traceback by the server; the caller gets no internals.
        logging.getLogger("caj.errors").error("unhandled error on %s", request.url.path, exc_info=error)
        return problem_response(status=500, reason="internal_error", title="Internal error",
                                detail="The request failed on our side; it is logged with its request id.",
                                instance=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
        reason = _REASONS_BY_STATUS.get(error.status_code, "error")
        detail = error.detail if isinstance(error.detail, str) else None
        return problem_response(
            status=error.status_code, reason=reason, title=reason.replace("_", " ").capitalize(), detail=detail,
            instance=request.url.path,
            headers=dict(error.headers) if error.headers else None,
        )

    @app.exception_handler(405)
    async def _method_not_allowed(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # Starlette's Allow names the methods of the first route that matched
        # the path; a path has a route per method here, so list them all.
        path = request.url.path.removeprefix(request.scope.get("root_path", ""))
        allowed = ", ".join(_allowed_methods(app, path)) or (error.headers or {}).get("Allow", "")
        return problem_response(status=405, reason="method_not_allowed", title="Method not allowed",
                                detail=f"{request.method} is not allowed here", instance=request.url.path,
                                headers={"Allow": allowed})


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the OpenAPI document lists for the path's template."""
    templates = getattr(app.state, "path_templates", None)
    if templates is None:
        templates = app.state.path_templates = [
            (re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$"),
             {method.upper() for method in operations})
            for template, operations in app.openapi()["paths"].items()
        ]
    return sorted({method for pattern, methods in templates if pattern.match(path) for method in methods})
