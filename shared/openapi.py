"""The OpenAPI document says how each operation can fail: every error is
problem+json (shared/problems.py), and the document lists the statuses that
the shared machinery can answer on each operation (authentication, rate
limit, body limit, unknown ids), those its dependencies declare with
`may_answer`, and those a route declares itself."""

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from shared.identity import authenticate_request
from shared.problems import PROBLEM_JSON

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details; `reason` is a stable machine-readable code.",
    "required": ["type", "title", "status", "reason"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "reason": {"type": "string"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
}

_AUTHENTICATED = {
    "401": "No API key, or one that is not valid or has been revoked",
    "403": "The key's role or agency may not do this",
    "429": "This key's rate limit is exceeded; see Retry-After",
    "503": "Keys are still loading; try again in a moment",
}
_BY_ID = {"404": "Not found, or not visible to the caller"}
_WITH_BODY = {"400": "The body cannot be parsed", "413": "The body is larger than the service accepts"}
_VALIDATION = {"422": "A parameter or the body is not valid; `errors` says which"}
_PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}


Dependency = TypeVar("Dependency", bound=Callable[..., Any])


def may_answer(statuses: dict[int, str]) -> Callable[[Dependency], Dependency]:
    """Mark a dependency with the problems it may answer (status: description):
    every operation that uses it lists them."""

    def mark(dependency: Dependency) -> Dependency:
        # An attribute of the function itself, read back by _document.
        dependency.__problem_statuses__ = {  # type: ignore[attr-defined]
            str(status): text for status, text in statuses.items()
        }
        return dependency

    return mark


def _uses(dependant: Dependant, call: Any) -> bool:
    return dependant.call is call or any(_uses(sub, call) for sub in dependant.dependencies)


def _declared_by_dependencies(dependant: Dependant) -> dict[str, str]:
    statuses = dict(getattr(dependant.call, "__problem_statuses__", {}))
    for sub in dependant.dependencies:
        statuses |= _declared_by_dependencies(sub)
    return statuses


def document_problems(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    """Replace `app.openapi` with a version that documents problem responses
    on the operations of `routers` (included in `app` without a prefix)."""

    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()  # FastAPI's document, which it caches; completed in place below
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        components["schemas"].pop("HTTPValidationError", None)
        components["schemas"].pop("ValidationError", None)
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "An API key made with `caj keys create`"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        for route in (route for router in routers for route in router.routes):
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            for method in route.methods or ():
                operation = schema["paths"].get(route.path_format, {}).get(method.lower())
                if operation is None:
                    continue
                _document(operation, route)
        for operations in schema["paths"].values():  # the app's own routes too
            for operation in operations.values():
                if "422" in operation.get("responses", {}):
                    operation["responses"]["422"]["content"] = _PROBLEM_CONTENT
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema


def _document(operation: dict, route: APIRoute) -> None:
    responses = operation.setdefault("responses", {})
    statuses: dict[str, str] = {}
    if _uses(route.dependant, authenticate_request):
        statuses |= _AUTHENTICATED
        operation["security"] = [{"bearer": []}, {"apiKey": []}]
    if route.dependant.path_params:
        statuses |= _BY_ID
    if route.dependant.body_params:
        statuses |= _WITH_BODY
    if route.dependant.path_params or route.dependant.query_params or route.dependant.body_params:
        statuses |= _VALIDATION
    statuses |= _declared_by_dependencies(route.dependant)
    for status, description in statuses.items():
        responses.setdefault(status, {"description": description})
    for status, response in responses.items():
        if status[0] in "45":  # every error is a problem, whoever declared it
            response["content"] = _PROBLEM_CONTENT
