"""Every error is problem+json with a reason, including ones nobody planned."""

from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.errors import Conflict
from shared.problems import install_problem_handlers


def app_with_failures() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/bug")
    def bug() -> dict:
        raise KeyError("an internal detail that must not leak")

    @app.get("/refused")
    def refused() -> dict:
        raise Conflict("transition_not_allowed", "Not allowed", "No.", allowed=["approved"])

    return app


def test_an_unexpected_error_is_a_problem_500_without_internals():
    client = TestClient(app_with_failures(), raise_server_exceptions=False)
    response = client.get("/bug")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["reason"] == "internal_error"
    assert "internal detail" not in response.text


def test_domain_problems_keep_their_extensions():
    response = TestClient(app_with_failures()).get("/refused")
    assert response.status_code == 409
    assert response.json() == {
        "type": "urn:caj-tracker:problem:transition_not_allowed", "title": "Not allowed", "status": 409,
        "reason": "transition_not_allowed", "detail": "No.", "instance": "/refused", "allowed": ["approved"],
    }
