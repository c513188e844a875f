"""Background work cannot die silently: capped backoff, supervised workers,
and /readyz naming a worker that is down."""

import asyncio
import random

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from shared.migrations import upgrade
from shared.retry import Backoff, retry
from shared.service import ServiceRuntime, create_service_app
from shared.settings import ServiceSettings
from shared.workers import SupervisedWorker


def restarts_of(worker: str) -> float:
    return REGISTRY.get_sample_value("caj_worker_restarts_total", {"worker": worker}) or 0.0


def worker_up(client: TestClient) -> float | None:
    """The flaky worker's caj_worker_up, as a scrape of /metrics leaves it."""
    assert client.get("/metrics").status_code == 200
    return REGISTRY.get_sample_value("caj_worker_up", {"service": "worker-test", "worker": "test-flaky-worker"})


# -- Backoff -------------------------------------------------------------------------
def test_backoff_grows_then_stays_at_its_cap_however_long_it_fails():
    backoff = Backoff(first=0.2, cap=5.0, jitter=0.0)
    delays = [backoff.next_delay() for _ in range(20_000)]  # far past where 0.2 * 2**n overflows
    assert delays[:4] == [0.2, 0.4, 0.8, 1.6]
    assert max(delays) == 5.0 and delays[-1] == 5.0
    assert backoff.failures == 20_000


def test_backoff_jitter_stays_within_its_bounds_and_spreads_replicas():
    backoff = Backoff(first=1.0, cap=1.0, jitter=0.2, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(500)]
    assert all(0.8 <= delay <= 1.2 for delay in delays)
    assert len({round(delay, 6) for delay in delays}) > 400


def test_backoff_reset_starts_again_from_the_first_delay():
    backoff = Backoff(first=0.1, cap=10.0, jitter=0.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 0.1


@pytest.mark.parametrize("arguments", [{"first": 0}, {"first": 2, "cap": 1}, {"factor": 0.5}, {"jitter": 1.0}])
def test_an_unusable_backoff_is_refused(arguments):
    with pytest.raises(ValueError, match="not a usable backoff"):
        Backoff(**arguments)


async def test_retry_returns_the_first_success_after_failures():
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise ConnectionError("not yet")
        return "done"

    assert await retry(flaky, what="test", backoff=Backoff(first=0.001, cap=0.002)) == "done"
    assert len(calls) == 4


# -- SupervisedWorker ----------------------------------------------------------------
async def test_a_worker_that_raises_is_logged_counted_and_restarted(caplog):
    runs = []
    second_run_started = asyncio.Event()

    async def loop() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("boom in the loop")
        second_run_started.set()
        await asyncio.Event().wait()  # then runs until stopped

    before = restarts_of("test-crasher")
    worker = SupervisedWorker("test-crasher", loop, backoff=Backoff(first=0.01, cap=0.01))
    worker.start()
    try:
        await asyncio.wait_for(second_run_started.wait(), timeout=5)
        assert worker.running and worker.restarts == 1
        assert worker.last_error == "RuntimeError: boom in the loop"
        assert restarts_of("test-crasher") == before + 1
        assert any("worker test-crasher stopped unexpectedly" in record.getMessage() and record.exc_info
                   for record in caplog.records)
    finally:
        await worker.stop()
    assert not worker.running


async def test_a_worker_waiting_to_restart_is_not_running_and_says_why():
    crashed = asyncio.Event()

    async def loop() -> None:
        crashed.set()
        raise OSError("disk gone")

    worker = SupervisedWorker("test-down", loop, backoff=Backoff(first=60.0, cap=60.0))
    worker.start()
    try:
        await asyncio.wait_for(crashed.wait(), timeout=5)
        await asyncio.sleep(0)  # let the supervisor record the exit
        assert not worker.running
        assert worker.status == "restarting after: OSError: disk gone"
    finally:
        await worker.stop()  # stops the wait to restart too


async def test_a_worker_that_returns_has_finished_and_is_not_restarted():
    runs = []

    async def once() -> None:
        runs.append(1)

    worker = SupervisedWorker("test-once", once, backoff=Backoff(first=0.001, cap=0.001))
    worker.start()
    for _ in range(50):
        await asyncio.sleep(0.001)
    assert runs == [1] and worker.finished and worker.restarts == 0 and worker.status == "finished"
    await worker.stop()


async def test_a_worker_whose_loop_keeps_failing_is_restarted_with_a_capped_delay():
    runs = []
    thirty_runs = asyncio.Event()

    async def always_fails() -> None:
        runs.append(asyncio.get_running_loop().time())
        if len(runs) >= 30:
            thirty_runs.set()
        raise ValueError("still broken")

    worker = SupervisedWorker("test-flapping", always_fails, backoff=Backoff(first=0.001, cap=0.004, jitter=0))
    worker.start()
    try:
        await thirty_runs.wait()
    finally:
        await worker.stop()
    gaps = [later - earlier for earlier, later in zip(runs[10:], runs[11:], strict=False)]
    assert worker.restarts >= 30 and max(gaps) < 0.5


# -- /readyz -------------------------------------------------------------------------
def test_readyz_is_503_naming_a_worker_while_it_is_down_and_200_when_it_is_back(tmp_path, kafka_bootstrap):
    database_url = f"sqlite:///{tmp_path / 'service.sqlite3'}"
    upgrade("catalog_service", database_url)
    settings = ServiceSettings(service_name="worker-test", database_url=database_url,
                               kafka_bootstrap_servers=kafka_bootstrap, log_json=False)
    runtime = ServiceRuntime(settings=settings, migrations_package="catalog_service")
    allowed_back = asyncio.Event()
    runs = []

    async def flaky_loop() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("lost its connection")
        await asyncio.Event().wait()

    async def start_worker(app) -> None:
        worker = SupervisedWorker("test-flaky-worker", flaky_loop, backoff=Backoff(first=3.0, cap=3.0, jitter=0))
        app.state.flaky = worker
        runtime.supervise(worker)
        worker.start()
        await allowed_back.wait()

    app = create_service_app(runtime, title="t", description="t", on_startup=start_worker)
    with TestClient(app) as client:
        down = None
        for _ in range(100):
            response = client.get("/readyz")
            if response.status_code == 503 and not response.json()["checks"]["workers"]["ok"]:
                down = response.json()["checks"]["workers"]["detail"]
                break
            client.portal.call(asyncio.sleep, 0.05)
        assert down is not None, "the crashed worker never showed on /readyz"
        assert "test-flaky-worker" in down and "lost its connection" in down
        assert worker_up(client) == 0.0, "/metrics says it is down too (the WorkerDown alert)"
        for _ in range(200):  # after the 3 s backoff the worker is up again
            response = client.get("/readyz")
            if response.status_code == 200:
                break
            client.portal.call(asyncio.sleep, 0.05)
        assert response.status_code == 200, response.json()
        assert response.json()["checks"]["workers"]["ok"]
        assert app.state.flaky.restarts == 1
        assert worker_up(client) == 1.0
