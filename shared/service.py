"""What every service process is made of, and the FastAPI app around it.

`ServiceRuntime` owns the database engine, the Kafka producer, the outbox
relay and the consumers. Kafka may be down when a service starts: the service
still starts (so /livez answers), keeps trying to connect in the background,
and /readyz says 503 until everything is connected.
"""

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from sqlmodel import Session

from shared import metrics
from shared.consumer import Handler, IdempotentConsumer
from shared.contracts.registry import CONSUMERS, ConsumerSpec
from shared.db import is_sqlite, make_engine, ping
from shared.group_commit import GroupCommitWriter
from shared.http_middleware import ServiceMiddleware
from shared.identity import KeyStore, RateLimiter
from shared.kafka import make_producer
from shared.logging import configure_logging
from shared.migrations import current_revision, head_revision
from shared.openapi import document_problems
from shared.outbox import OutboxRelay, outbox_backlog, outbox_set_aside_count
from shared.problems import install_problem_handlers
from shared.retry import Backoff, retry
from shared.settings import ServiceSettings
from shared.tasks import cancel_and_wait
from shared.topics import IDENTITY_KEYS, TopicSpec, ensure_topics
from shared.tracing import configure_tracing, instrument_app
from shared.workers import SupervisedWorker

log = logging.getLogger(__name__)


def registered_consumers(service: str, handlers: Mapping[str, Handler]) -> tuple[tuple[ConsumerSpec, ...], bool]:
    """The service's consumer groups (each with its topics) and whether it
    follows identity.keys, as shared/contracts/registry.py lists them, which
    is also what the AsyncAPI document says. Refuses handlers that do not
    match the registry's groups one to one, so neither can drift."""
    entries = [spec for spec in CONSUMERS if spec.service == service]
    groups = {spec.group_id: spec for spec in entries if spec.group_id is not None}
    missing, unlisted = sorted(set(groups) - set(handlers)), sorted(set(handlers) - set(groups))
    if missing or unlisted:
        raise ValueError(
            f"the {service} service's handlers do not match shared/contracts/registry.py: "
            f"no handler for {missing or 'none'}; handlers for groups it does not list: {unlisted or 'none'}"
        )
    group_free = [spec for spec in entries if spec.group_id is None]
    if any(spec.topics != (IDENTITY_KEYS,) for spec in group_free):
        # The key store is the only reader without a group that a runtime has.
        raise ValueError(f"the {service} service can read only {IDENTITY_KEYS.name} without a consumer group")
    return tuple(groups.values()), bool(group_free)


@dataclass
class CheckResult:
    ok: bool
    detail: str = ""


@dataclass
class ServiceRuntime:
    settings: ServiceSettings
    migrations_package: str
    topics: tuple[TopicSpec, ...] = ()
    # A handler per consumer group, by group id: the groups, their topics, and
    # whether the service reads API keys (identity.keys) come from the registry.
    handlers: dict[str, Handler] = field(default_factory=dict)
    dead_letter_topic: TopicSpec | None = None
    # Gauges computed from the database when /metrics is scraped.
    metric_refreshers: tuple[Callable[[Session], None], ...] = ()
    # Service-specific readiness checks, e.g. "the catalog is loaded".
    extra_checks: dict[str, Callable[[], CheckResult]] = field(default_factory=dict)
    consumers: list[IdempotentConsumer] = field(default_factory=list)
    # Workers a service adds of its own (e.g. the webhook dispatcher), checked
    # by /readyz with the runtime's own.
    extra_workers: list[SupervisedWorker] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Refused before anything starts when the handlers and the registry disagree.
        self.consumer_specs, self.identity = registered_consumers(self.settings.service_name, self.handlers)
        url = self.settings.resolved_database_url()
        self.engine = make_engine(url, sqlite_synchronous=self.settings.sqlite_synchronous)
        # Reads never wait for SQLite's write lock; on PostgreSQL one engine serves both.
        self.read_engine = (
            make_engine(url, sqlite_synchronous=self.settings.sqlite_synchronous, sqlite_begin="DEFERRED")
            if is_sqlite(url) else self.engine
        )
        self.writer = GroupCommitWriter(self.engine, max_batch=self.settings.group_commit_max_batch)
        # Kafka clients need a running event loop: they are made in start().
        self.producer: AIOKafkaProducer | None = None
        self.relay: OutboxRelay | None = None
        self.expected_revision = head_revision(self.migrations_package)
        self.key_store: KeyStore | None = None
        self.kafka_connected = False
        self._connect_task: asyncio.Task | None = None
        self._kafka_check: tuple[float, CheckResult] | None = None

    # -- lifecycle -------------------------------------------------------------
    async def start(self) -> None:
        self.writer.start()
        if self.identity:
            self.key_store = KeyStore(self.settings.kafka_bootstrap_servers)
        self.producer = make_producer(self.settings.kafka_bootstrap_servers, client_id=self.settings.client_id)
        self.relay = OutboxRelay(
            engine=self.engine,
            producer=self.producer,
            poll_interval=self.settings.outbox_poll_interval_seconds,
            batch_size=self.settings.outbox_batch_size,
            max_attempts=self.settings.outbox_max_attempts,
            writer=self.writer,
            read_engine=self.read_engine,
        )
        self._connect_task = asyncio.create_task(self._connect_kafka(), name="kafka-connect")

    async def _connect_kafka(self) -> None:
        """Topics, producer, relay, consumers, in that order; retry until it works."""
        all_topics = tuple({spec.name: spec for spec in self._all_topics()}.values())
        producer, relay = self.producer, self.relay
        assert producer is not None and relay is not None  # made by start()

        async def topics_and_producer() -> None:
            await ensure_topics(self.settings.kafka_bootstrap_servers, all_topics, retry_for=5,
                                replication_factor=self.settings.kafka_replication_factor)
            await producer.start()

        await retry(topics_and_producer, what="connecting to Kafka", backoff=Backoff(first=0.5, cap=10.0))
        relay.start()
        if self.key_store is not None:
            await retry(self.key_store.start, what="starting the key store")
        if self.consumer_specs:
            # A consumer must not meet a schema it does not know (a rolling
            # deploy before `caj db upgrade`): it would dead-letter good records.
            schema_wait = Backoff(first=0.5, cap=5.0)
            while not (check := await asyncio.to_thread(self._check_database)).ok:
                delay = schema_wait.next_delay()
                log.warning("consumers wait for the database: %s; checking again in %.1fs", check.detail, delay)
                await asyncio.sleep(delay)
        for spec in self.consumer_specs:
            if self.dead_letter_topic is None:
                raise RuntimeError("a consuming service needs a dead-letter topic")
            group_id = spec.group_id
            assert group_id is not None  # registered_consumers keeps only readers with a group
            consumer = IdempotentConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap_servers,
                group_id=group_id,
                client_id=f"{self.settings.client_id}-{group_id}",
                topics=[topic.name for topic in spec.topics],
                handler=self.handlers[group_id],
                producer=producer,
                dead_letter_topic=self.dead_letter_topic.name,
                max_attempts=self.settings.consumer_max_attempts,
                writer=self.writer,
            )
            await retry(consumer.start, what=f"starting consumer {group_id}")
            self.consumers.append(consumer)
        self.kafka_connected = True
        log.info("connected to Kafka at %s", self.settings.kafka_bootstrap_servers)

    def _all_topics(self) -> list[TopicSpec]:
        specs = list(self.topics)
        for consumer_spec in self.consumer_specs:
            specs.extend(consumer_spec.topics)
        if self.dead_letter_topic:
            specs.append(self.dead_letter_topic)
        if self.identity:
            specs.append(IDENTITY_KEYS)
        return specs

    async def stop(self) -> None:
        await cancel_and_wait(self._connect_task)
        for consumer in self.consumers:
            await consumer.stop()
        if self.key_store is not None:
            await self.key_store.stop()
        if self.relay is not None:
            await self.relay.stop()
        await self.writer.stop()
        if self.kafka_connected and self.producer is not None:
            await self.producer.stop()
        self.engine.dispose()
        self.read_engine.dispose()

    def supervise(self, worker: SupervisedWorker) -> None:
        """Have /readyz check a worker the service runs of its own."""
        self.extra_workers.append(worker)

    def workers(self) -> list[SupervisedWorker]:
        """Every background worker of this process that has been started."""
        components = [self.writer, self.relay, self.key_store, *self.consumers]
        workers = [component.worker for component in components if component is not None]
        return [worker for worker in [*workers, *self.extra_workers] if worker.started]

    # -- health ----------------------------------------------------------------
    async def readiness(self) -> dict[str, CheckResult]:
        try:
            database = await asyncio.wait_for(
                asyncio.to_thread(self._check_database), timeout=self.settings.readiness_timeout_seconds
            )
        except TimeoutError:
            database = CheckResult(False, "database did not answer in time")
        checks = {"database": database, "kafka": await self._check_kafka(), "workers": self._check_workers()}
        if self.consumer_specs:
            checks["consumers"] = self._check_consumers()
        if self.identity:
            store = self.key_store
            if store is None or not store.running:
                checks["identity"] = CheckResult(False, "key store not started")
            elif not store.caught_up:
                checks["identity"] = CheckResult(False, "reading identity.keys")
            else:
                checks["identity"] = CheckResult(True)
        for name, check in self.extra_checks.items():
            checks[name] = check()
        return checks

    def _check_database(self) -> CheckResult:
        try:
            # The read engine: a probe must not queue behind writers for SQLite's lock.
            ping(self.read_engine)
            revision = current_revision(self.read_engine)
        except Exception as error:
            return CheckResult(False, f"database unreachable: {type(error).__name__}")
        if revision != self.expected_revision:
            return CheckResult(False, f"schema at {revision}, expected {self.expected_revision}: run migrations")
        return CheckResult(True)

    async def _check_kafka(self) -> CheckResult:
        if not self.kafka_connected or self.producer is None or self.relay is None:
            return CheckResult(False, "not connected yet")
        # A metadata round trip proves the broker answers now; cached for a
        # second so a burst of probes does not become a burst of requests.
        now = time.monotonic()
        if self._kafka_check and now - self._kafka_check[0] < 1.0:
            return self._kafka_check[1]
        try:
            cluster = await asyncio.wait_for(
                self.producer.client.fetch_all_metadata(), timeout=self.settings.readiness_timeout_seconds
            )
            result = CheckResult(True) if cluster.brokers() else CheckResult(False, "no broker in metadata")
        except Exception as error:
            result = CheckResult(False, f"broker unreachable: {type(error).__name__}")
        self._kafka_check = (now, result)
        return result

    def _check_workers(self) -> CheckResult:
        down = [f"{worker.name} ({worker.status})" for worker in self.workers() if not worker.running
                and not worker.finished]
        if down:
            return CheckResult(False, "worker down: " + "; ".join(down))
        return CheckResult(True, f"{len(self.workers())} running")

    def _check_consumers(self) -> CheckResult:
        for consumer in self.consumers:
            if not consumer.running:
                return CheckResult(False, f"consumer {consumer.group_id} stopped")
            if not consumer.assigned_partitions():
                return CheckResult(False, f"consumer {consumer.group_id} has no partitions assigned")
        if len(self.consumers) < len(self.consumer_specs):
            return CheckResult(False, "consumers starting")
        return CheckResult(True)

    def refresh_gauges(self) -> None:
        with Session(self.read_engine) as session:
            backlog, oldest_age = outbox_backlog(session)
            set_aside = outbox_set_aside_count(session)
            for refresh in self.metric_refreshers:
                refresh(session)
        service = self.settings.service_name
        metrics.OUTBOX_BACKLOG.labels(service).set(backlog)
        metrics.OUTBOX_OLDEST_AGE.labels(service).set(oldest_age)
        metrics.OUTBOX_SET_ASIDE_ROWS.labels(service).set(set_aside)

    async def refresh_health_gauges(self) -> None:
        """Worker and broker gauges, from the same checks /readyz makes."""
        service = self.settings.service_name
        for worker in self.workers():
            metrics.WORKER_UP.labels(service, worker.name).set(1 if worker.running or worker.finished else 0)
        broker = await self._check_kafka()
        metrics.KAFKA_BROKER_REACHABLE.labels(service).set(1 if broker.ok else 0)


def create_service_app(
    runtime: ServiceRuntime,
    *,
    title: str,
    description: str,
    routers: Sequence[APIRouter] = (),
    on_startup: Callable[[FastAPI], Coroutine[Any, Any, None]] | None = None,
    on_shutdown: Callable[[FastAPI], Awaitable[None]] | None = None,
) -> FastAPI:
    """`on_startup` runs once the runtime has started; the app serves meanwhile.
    `on_shutdown` runs before the runtime stops (its writer still works)."""
    settings = runtime.settings
    configure_tracing(service=settings.service_name)
    configure_logging(service=settings.service_name, level=settings.log_level, json=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await runtime.start()
        app.state.key_store = runtime.key_store
        # What is loaded by now (modules, models, the app) lives as long as the
        # process: keep the collector from walking it on every full collection,
        # which otherwise stalls all requests in flight for tens of ms.
        gc.collect()
        gc.freeze()
        startup = asyncio.create_task(on_startup(app), name="service-startup") if on_startup else None
        try:
            yield
        finally:
            if startup is not None and not startup.done():
                startup.cancel()
            if on_shutdown is not None:
                await on_shutdown(app)
            await runtime.stop()

    app = FastAPI(title=title, description=description, version="1.0.0", lifespan=lifespan)
    app.state.runtime = runtime
    app.state.rate_limiter = RateLimiter(rate=settings.rate_limit_per_second, burst=settings.rate_limit_burst)
    install_problem_handlers(app)
    document_problems(app, routers)
    app.add_middleware(ServiceMiddleware, service=settings.service_name, max_body_bytes=settings.max_body_bytes)
    # Outermost: the request's span is current in every layer below, access log included.
    instrument_app(app)

    @app.get("/livez", tags=["operations"], summary="The process is alive")
    async def livez() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", tags=["operations"], summary="Database, Kafka and consumers are ready",
             responses={503: {"description": "Not ready; the same body says which check failed",
                              "content": {"application/json": {}}}})
    async def readyz() -> JSONResponse:
        checks = await runtime.readiness()
        ready = all(check.ok for check in checks.values())
        body = {
            "status": "ready" if ready else "not_ready",
            "checks": {name: {"ok": check.ok, "detail": check.detail} for name, check in checks.items()},
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", include_in_schema=False)
    async def prometheus_metrics():
        await runtime.refresh_health_gauges()
        try:
            await asyncio.to_thread(runtime.refresh_gauges)
        except Exception:
            log.warning("could not refresh gauges from the database", exc_info=True)
        return metrics.metrics_response()

    for router in routers:
        app.include_router(router)
    return app
