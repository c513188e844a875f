"""The trace-context helpers: the envelope's distributed-tracing extension,
the outbox stamping the current context, the group-commit writer carrying
the caller's context to its thread, consumer spans parented on a record's
traceparent, trace ids in log lines, and a webhook attempt sending its
delivery's trace. Spans are read from an in-memory exporter."""

import io
import json
import logging
import secrets
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import create_engine
from sqlmodel import Session, select

from notifications_service.config import NotificationsSettings
from notifications_service.delivery.attempt import Claimed, send_attempt, webhook_client
from notifications_service.webhooks import AddressGuard, new_secret
from shared.events import envelope_json, from_json, from_kafka, record_from_envelope, to_kafka
from shared.group_commit import GroupCommitWriter
from shared.logging import configure_logging, request_id_var
from shared.messaging_models import OutboxMessage
from shared.outbox import NewEvent, stage_events
from shared.tracing import (
    configure_tracing,
    context_from_headers,
    continuing,
    current_trace_headers,
    event_trace_headers,
    handling,
    trace_headers_for,
    trace_id_of,
)
from tests.notifications.receiver import Receiver

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN}-01"


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """The process's tracer provider (as a service sets it up), with an
    exporter the tests read."""
    configure_tracing(service="tests")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def finished(spans: InMemorySpanExporter) -> InMemorySpanExporter:
    spans.clear()
    return spans


def parts(traceparent: str | None) -> tuple[str, str]:
    """(trace id, parent span id) of a traceparent."""
    assert traceparent is not None
    _version, trace_id, span_id, _flags = traceparent.split("-")
    return trace_id, span_id


# -- the envelope ----------------------------------------------------------------------
def test_the_extension_rides_in_the_envelope_and_the_kafka_headers_and_is_read_back():
    _id, envelope = envelope_json(type="t.v1", source="/s", subject="x", data={"a": 1},
                                  traceparent=TRACEPARENT, tracestate="vendor=abc")
    record = record_from_envelope(envelope, key="x")
    headers = dict(record.headers)
    assert headers["ce_traceparent"] == TRACEPARENT.encode() and headers["ce_tracestate"] == b"vendor=abc"
    # The SDK's binary mode makes the same headers from the same event.
    assert sorted(to_kafka(from_json(envelope), key="x").headers) == sorted(record.headers)
    event = from_kafka(key=record.key, value=record.value, headers=record.headers)
    assert event_trace_headers(event) == (TRACEPARENT, "vendor=abc")


def test_an_event_without_a_trace_carries_no_extension():
    _id, envelope = envelope_json(type="t.v1", source="/s", subject=None, data=None)
    record = record_from_envelope(envelope, key="x")
    assert not any(name in ("ce_traceparent", "ce_tracestate") for name, _ in record.headers)
    assert event_trace_headers(from_json(envelope)) == (None, None)


def test_malformed_or_missing_traceparents_start_a_new_trace():
    assert trace_id_of(TRACEPARENT) == TRACE_ID
    for bad in (None, "", "00-zz-yy-01", f"00-{'0' * 32}-{PARENT_SPAN}-01", "garbage"):
        assert trace_id_of(bad) is None
        assert not trace.get_current_span(context_from_headers(bad)).get_span_context().is_valid


# -- the outbox ----------------------------------------------------------------------------
def _staged_envelopes(engine, events) -> list[dict]:
    with Session(engine) as session:
        stage_events(session, events)
        session.commit()
        return [json.loads(row.envelope) for row in session.exec(select(OutboxMessage)).all()]


def _outbox_engine(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'outbox.sqlite3'}")
    OutboxMessage.__table__.create(engine)
    return engine


def _event(**extra) -> NewEvent:
    return NewEvent(topic="t", key="k", type="t.v1", source="/s", subject="k", data={"a": 1}, **extra)


def test_staged_events_carry_the_current_span_as_their_parent(spans, tmp_path):
    engine = _outbox_engine(tmp_path)
    with continuing(TRACEPARENT, "vendor=abc", "a request") as span:
        [envelope] = _staged_envelopes(engine, [_event()])
    own_span = format(span.get_span_context().span_id, "016x")
    assert parts(envelope["traceparent"]) == (TRACE_ID, own_span)
    assert envelope["tracestate"] == "vendor=abc"


def test_staged_events_outside_any_span_carry_no_trace_and_a_named_one_wins(spans, tmp_path):
    engine = _outbox_engine(tmp_path)
    [untraced] = _staged_envelopes(engine, [_event()])
    assert "traceparent" not in untraced
    with continuing(None, None, "elsewhere"):
        envelopes = _staged_envelopes(engine, [_event(traceparent=TRACEPARENT)])
    assert envelopes[-1]["traceparent"] == TRACEPARENT


async def test_the_writer_runs_work_in_the_callers_context(spans, tmp_path):
    writer = GroupCommitWriter(create_engine(f"sqlite:///{tmp_path / 'w.sqlite3'}"))
    writer.start()
    try:
        token = request_id_var.set("req-1")
        try:
            with continuing(TRACEPARENT, None, "a request") as span:
                seen = await writer.run(lambda _session: (current_trace_headers()[0], request_id_var.get()))
        finally:
            request_id_var.reset(token)
        assert parts(seen[0]) == (TRACE_ID, format(span.get_span_context().span_id, "016x"))
        assert seen[1] == "req-1"
        # Another caller's context is its own.
        assert await writer.run(lambda _session: (current_trace_headers()[0], request_id_var.get())) == (None, None)
    finally:
        await writer.stop()


# -- consumers -------------------------------------------------------------------------------
def _received(traceparent: str | None, event_id: str = "e-1"):
    _id, envelope = envelope_json(type="t.v1", source="/s", subject="x", data={"a": 1}, traceparent=traceparent)
    document = json.loads(envelope)
    document["id"] = event_id
    record = record_from_envelope(json.dumps(document), key="x")
    return from_kafka(key=record.key, value=record.value, headers=record.headers)


def test_a_handled_record_gets_a_consumer_span_under_its_traceparent(finished):
    event = _received(TRACEPARENT)
    with handling([event], topic="requests.events", group="g") as [span]:
        inside = current_trace_headers()[0]
        carried = trace_headers_for(event)[0]
    [exported] = finished.get_finished_spans()
    assert exported.kind == SpanKind.CONSUMER
    assert format(exported.context.trace_id, "032x") == TRACE_ID
    assert exported.parent is not None and format(exported.parent.span_id, "016x") == PARENT_SPAN
    assert exported.attributes["messaging.destination.name"] == "requests.events"
    own = format(span.get_span_context().span_id, "016x")
    assert parts(inside) == parts(carried) == (TRACE_ID, own)
    assert current_trace_headers() == (None, None), "the span is current only while the record is handled"


def test_a_batch_gives_each_event_its_own_span_in_its_own_trace(finished):
    other_trace = secrets.token_hex(16)
    first, second = _received(TRACEPARENT, "e-1"), _received(f"00-{other_trace}-{PARENT_SPAN}-01", "e-2")
    untraced = _received(None, "e-3")
    with handling([first, second, untraced], topic="t", group="g"):
        assert current_trace_headers() == (None, None), "no one event's span is current in a batch"
        assert parts(trace_headers_for(first)[0])[0] == TRACE_ID
        assert parts(trace_headers_for(second)[0])[0] == other_trace
        started_here = parts(trace_headers_for(untraced)[0])[0]
    assert started_here not in (TRACE_ID, other_trace), "a record without a trace starts one"
    assert len(finished.get_finished_spans()) == 3


def test_a_failing_handler_fails_its_span_and_the_error_goes_on(finished):
    with pytest.raises(RuntimeError), handling([_received(TRACEPARENT)], topic="t", group="g"):
        raise RuntimeError("handler broke")
    [exported] = finished.get_finished_spans()
    assert exported.status.status_code == StatusCode.ERROR
    assert exported.events[0].name == "exception"


# -- logs ------------------------------------------------------------------------------------
def test_every_log_line_carries_the_trace_id(spans, monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(service="tests")
        logger = logging.getLogger("tests.tracing")
        with continuing(TRACEPARENT, None, "a request") as span:
            logger.info("inside")
        logger.info("outside")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["trace_id"] == TRACE_ID and inside["span_id"] == format(span.get_span_context().span_id, "016x")
    assert outside["trace_id"] is None and outside["span_id"] is None
    assert not [name for name in inside if name.startswith("otel")], "written under our names only"


# -- webhooks ----------------------------------------------------------------------------------
def _claimed(url: str, traceparent: str | None) -> Claimed:
    return Claimed(delivery_id="msg_trace_test", notification_id="n-1", agency_id="tj-trace-test",
                   event_type="t.v1", event_time=datetime.now(UTC), attempts=0, schedule_step=0,
                   body=b'{"type": "t"}', url=url, secrets_in_use=(new_secret(),), traceparent=traceparent)


async def test_each_attempt_sends_a_child_of_the_deliverys_stored_trace(finished):
    settings = NotificationsSettings(webhook_allow_private_addresses=True, webhook_timeout_seconds=5)
    guard = AddressGuard(allow_private=True)
    with Receiver() as receiver:
        url = receiver.script("/traced")
        async with webhook_client(settings, guard) as client:
            claimed = _claimed(url, TRACEPARENT)
            await send_attempt(client, guard, claimed)
            await send_attempt(client, guard, replace(claimed, attempts=1))
            await send_attempt(client, guard, _claimed(url, None))
        first, retry, untraced = receiver.received("/traced")
    assert parts(first.headers["traceparent"])[0] == parts(retry.headers["traceparent"])[0] == TRACE_ID
    assert first.headers["traceparent"] != retry.headers["traceparent"], "a span per attempt"
    attempts = [span for span in finished.get_finished_spans() if span.kind == SpanKind.CLIENT]
    assert [format(span.parent.span_id, "016x") for span in attempts[:2] if span.parent] == [PARENT_SPAN] * 2
    # A delivery kept from before traces were stored still sends one, of its own.
    assert parts(untraced.headers["traceparent"])[0] != TRACE_ID


def test_an_http_request_makes_one_server_span_under_the_callers_traceparent(finished):
    """One span per request, continuing the caller's trace; no span per ASGI
    message, and none for probes and scrapes."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from shared.tracing import instrument_app

    app = FastAPI()

    @app.post("/v1/things/{thing_id}")
    def make_thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    @app.get("/readyz")
    def ready() -> dict[str, str]:
        return {"status": "ok"}

    instrument_app(app)
    with TestClient(app) as client:
        assert client.post("/v1/things/a", headers={"traceparent": TRACEPARENT}).status_code == 200
        assert client.get("/readyz").status_code == 200
    made = finished.get_finished_spans()
    assert [(span.name, span.kind) for span in made] == [("POST /v1/things/{thing_id}", SpanKind.SERVER)]
    assert format(made[0].context.trace_id, "032x") == TRACE_ID
    assert made[0].parent is not None and format(made[0].parent.span_id, "016x") == PARENT_SPAN
