"""Domain errors are raised without HTTP and answered as problem+json in one
place; a dependency's documented problems reach every operation using it."""

from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient

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
from shared.openapi import document_problems, may_answer
from shared.problems import install_problem_handlers
from shared.settings import REPO_ROOT


def answer_to(error: DomainError):
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/thing")
    def thing() -> dict:
        raise error

    return TestClient(app).get("/thing")


@pytest.mark.parametrize(("error", "status"), [
    (Unauthenticated("unauthenticated", "Authentication required"), 401),
    (Forbidden("forbidden", "Not for this role"), 403),
    (NotFound("thing_not_found", "No such thing"), 404),
    (Conflict("thing_taken", "Already taken"), 409),
    (Invalid("thing_refused", "Refused"), 422),
    (RateLimited("rate_limited", "Too many requests", retry_after=3), 429),
    (Unavailable("thing_loading", "Still loading"), 503),
])
def test_each_kind_of_domain_error_is_a_problem_with_its_status(error, status):
    response = answer_to(error)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {"type": f"urn:caj-tracker:problem:{error.reason}", "title": error.title,
                                "status": status, "reason": error.reason, "instance": "/thing"}


def test_extensions_and_headers_are_kept():
    refused = answer_to(Conflict("transition_not_allowed", "Not allowed", "No.", allowed=["approved"]))
    assert refused.json()["detail"] == "No." and refused.json()["allowed"] == ["approved"]
    assert answer_to(Unavailable("loading", "Loading", retry_after=2)).headers["retry-after"] == "2"
    assert "retry-after" not in answer_to(Unavailable("loading", "Loading")).headers
    assert answer_to(RateLimited("rate_limited", "Slow down", retry_after=5)).headers["retry-after"] == "5"
    assert answer_to(Unauthenticated("unauthenticated", "Who?")).headers["www-authenticate"].startswith("Bearer")


def test_operations_list_the_problems_their_dependencies_declare():
    @may_answer({503: "Not loaded yet"})
    async def loaded() -> str:
        raise Unavailable("loading", "Loading", retry_after=1)

    async def through_another(value: Annotated[str, Depends(loaded)]) -> str:
        return value

    router = APIRouter()

    @router.get("/direct")
    async def direct(value: Annotated[str, Depends(loaded)]) -> str:
        return value

    @router.get("/nested")
    async def nested(value: Annotated[str, Depends(through_another)]) -> str:
        return value

    @router.get("/plain")
    async def plain() -> str:
        return "ok"

    app = FastAPI()
    install_problem_handlers(app)
    document_problems(app, [router])
    app.include_router(router)
    paths = app.openapi()["paths"]
    for path in ("/direct", "/nested"):
        assert paths[path]["get"]["responses"]["503"]["description"] == "Not loaded yet"
        assert "application/problem+json" in paths[path]["get"]["responses"]["503"]["content"]
    assert "503" not in paths["/plain"]["get"]["responses"]
    assert TestClient(app).get("/nested").status_code == 503


def test_services_raise_domain_errors_not_http_ones():
    """The mapping to HTTP stays in shared/problems.py. The console is not an
    API: it answers people with HTML error pages of its own, so it is left out."""
    http_made_by_hand = ("HTTPException", "JSONResponse", "problem_response", "ProblemError", "shared.problems")
    api_services = [path for path in sorted((REPO_ROOT / "services").rglob("*.py"))
                    if "console" not in path.relative_to(REPO_ROOT / "services").parts]
    offenders = [
        f"{path.relative_to(REPO_ROOT)}: {word}"
        for path in api_services
        for word in http_made_by_hand if word in path.read_text()
    ]
    assert not offenders
