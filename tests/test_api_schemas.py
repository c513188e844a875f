"""Each service's answers match its own OpenAPI document, under generated
requests (Schemathesis): no server errors, only documented statuses and
content types (every error is problem+json), bodies that match their
schemas, bad input refused. The services run as real processes."""

import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from schemathesis.config import SchemathesisConfig

from tests.requests.conftest import Keys, auth
from tests.service_process import ready_services

# Generous limits: the fuzzer is one caller sending fast.
UNLIMITED = {"rate_limit_per_second": "100000", "rate_limit_burst": "100000"}


@pytest.fixture(scope="module")
def services(kafka_bootstrap, tmp_path_factory):
    with ready_services([f"{name}_service" for name in ("catalog", "requests", "notifications")],
                        kafka_bootstrap=kafka_bootstrap, directory=tmp_path_factory.mktemp("api-schemas"),
                        **UNLIMITED) as started:
        yield {package.removesuffix("_service"): service for package, service in started.items()}


@pytest.fixture(scope="module")
def coordinator(kafka_bootstrap, services) -> dict[str, str]:
    """A coordinator's key, once every service knows it."""
    key = Keys(kafka_bootstrap).make("coordinator")
    deadline = time.monotonic() + 30
    for name in ("requests", "notifications"):
        while httpx.get(services[name].base_url + "/v1/notifications" if name == "notifications"
                        else services[name].base_url + "/v1/offers", headers=auth(key)).status_code == 401:
            assert time.monotonic() < deadline, f"{name} never learnt the key"
            time.sleep(0.2)
    return auth(key)


# A request valid by the schema may still be refused for what it means (an
# unknown commitment, a URL at a private address): only that check is left out.
EXCLUDED = [positive_data_acceptance]
# Invalid input may also be refused for its size (413, before it is parsed).
CONFIG = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": [
    400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]}}})


def problems_under_generated_requests(base_url: str, headers: dict[str, str], examples: int) -> dict[str, str]:
    """For every operation, valid and invalid requests made from the
    document: what went wrong, by operation and kind of data."""
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json", config=CONFIG)
    found: dict[str, str] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        takes_input = any(True for _ in operation.iter_parameters()) or bool(operation.body)
        # Without parameters or a body there is no invalid request to make.
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if takes_input else (GenerationMode.POSITIVE,)
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck),
                      database=None, derandomize=True)
            def check(case) -> None:
                case.call_and_validate(headers=headers, excluded_checks=EXCLUDED)

            try:
                check()
            except Exception as error:  # a failed check, with the request that shows it
                found[f"{operation.label} ({mode.value})"] = str(error)[:3000]
    return found


@pytest.mark.parametrize("name", ["catalog", "requests", "notifications"])
def test_answers_match_the_documents(services, coordinator, name):
    found = problems_under_generated_requests(services[name].base_url, coordinator, examples=25)
    assert not found, "\n\n".join(f"{label}:\n{detail}" for label, detail in found.items())
