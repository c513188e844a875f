"""W3C trace context through the whole chain: HTTP in, the outbox, Kafka,
each consumer, and the webhook out.

- An HTTP request continues the caller's `traceparent` or starts a trace
  (the FastAPI instrumentation); httpx calls carry it on.
- `stage_events` stamps the current context on each event it stages, as the
  CloudEvents distributed-tracing extension (`traceparent`, `tracestate`),
  so it rides in the outbox row and goes out as `ce_traceparent`.
- A consumer handles each record in a span whose parent is the record's
  `traceparent` (`handling`); events its handler stages carry that span on.
- A webhook delivery keeps the trace context of the span that created it, so
  every attempt, a retry days later included, sends the same trace.

Spans are exported over OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT is set.
Without it they are still made (and dropped when they end): trace ids are
then only in the logs and on the wire, which is what `caj trace` reads.
"""

import contextlib
import os
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any

from cloudevents.core.v1.event import CloudEvent
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

# The CloudEvents distributed-tracing extension's attribute names.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
OTLP_ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"
# Probes and scrapes make no spans: they would bury the traces that matter.
UNTRACED_URLS = "livez,readyz,metrics"

_W3C = TraceContextTextMapPropagator()
_tracer = trace.get_tracer("caj-tracker")
_configured_for: str | None = None
# While a consumer hands a run of events to a batch handler, the span
# handling each one, by (source, id): `trace_headers_for` looks there first.
_handling_spans: ContextVar[dict[tuple[str, str], Span] | None] = ContextVar("handling_spans", default=None)

TraceHeaders = tuple[str | None, str | None]  # (traceparent, tracestate)


def configure_tracing(*, service: str) -> None:
    """Once per process: the SDK's tracer provider (with an OTLP exporter only
    when OTEL_EXPORTER_OTLP_ENDPOINT is set), httpx calls carrying the
    context, and the current trace and span ids on every log record."""
    global _configured_for
    if _configured_for is not None:
        return  # the provider can be set only once; tests build several apps per process
    # Imported here: each instrumentor patches libraries as it is set up.
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.logging import LoggingInstrumentor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if os.environ.get(OTLP_ENDPOINT_VARIABLE):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # The exporter reads the endpoint (and OTEL_EXPORTER_OTLP_HEADERS etc.) itself.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    HTTPXClientInstrumentor().instrument()
    # Only the ids on each record (shared.logging writes them): our own
    # handler writes the lines, not OpenTelemetry's log pipeline.
    LoggingInstrumentor().instrument(inject_trace_context=True, enable_log_auto_instrumentation=False)
    _configured_for = service


def instrument_app(app: Any) -> None:
    """A server span per HTTP request, continuing the caller's traceparent.
    Not a span per ASGI message as well (`http send`/`http receive`): they
    tell nothing the server span does not, and cost a span each."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls=UNTRACED_URLS, exclude_spans=["receive", "send"])


# -- the current context, as headers ------------------------------------------------
def current_trace_headers() -> TraceHeaders:
    """The current span's context as W3C headers; (None, None) outside any span."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get(TRACEPARENT), carrier.get(TRACESTATE) or None


def context_from_headers(traceparent: str | None, tracestate: str | None = None) -> otel_context.Context:
    """A context whose remote parent is `traceparent`; an empty one when it
    is missing or malformed (a new trace then starts there)."""
    carrier = {TRACEPARENT: traceparent} if traceparent else {}
    if traceparent and tracestate:
        carrier[TRACESTATE] = tracestate
    return _W3C.extract(carrier, context=otel_context.Context())


def trace_id_of(traceparent: str | None) -> str | None:
    """The 32 hex digits of a valid traceparent's trace id, else None."""
    span_context = trace.get_current_span(context_from_headers(traceparent)).get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def current_trace_id() -> str | None:
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


# -- events ------------------------------------------------------------------------
def event_trace_headers(event: CloudEvent) -> TraceHeaders:
    """The trace context an event carries (its distributed-tracing extension)."""
    attributes = event.get_attributes()
    traceparent, tracestate = attributes.get(TRACEPARENT), attributes.get(TRACESTATE)
    return (str(traceparent) if traceparent else None, str(tracestate) if tracestate else None)


def trace_headers_for(event: CloudEvent) -> TraceHeaders:
    """The trace context to carry on what handling `event` leads to: the span
    handling it, else the current span, else what the event itself carries."""
    spans = _handling_spans.get()
    span = spans.get((event.get_source(), event.get_id())) if spans else None
    if span is not None:
        carrier: dict[str, str] = {}
        _W3C.inject(carrier, context=trace.set_span_in_context(span))
        return carrier.get(TRACEPARENT), carrier.get(TRACESTATE) or None
    current = current_trace_headers()
    return current if current[0] else event_trace_headers(event)


@contextlib.contextmanager
def handling(events: Sequence[CloudEvent], *, topic: str, group: str) -> Iterator[list[Span]]:
    """A consumer span per event, each a child of the event's traceparent. One
    event: its span is the current one (logs and staged events carry it).
    Several (a batch handler): `trace_headers_for(event)` finds each one's.
    An error ends every span as failed, and goes on."""
    spans = []
    for event in events:
        span = _tracer.start_span(
            f"{topic} process", context=context_from_headers(*event_trace_headers(event)), kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "kafka", "messaging.operation.type": "process",
                        "messaging.destination.name": topic, "messaging.consumer.group.name": group,
                        "messaging.message.id": event.get_id(), "cloudevents.event_type": event.get_type()},
        )
        spans.append(span)
    by_event = {(event.get_source(), event.get_id()): span for event, span in zip(events, spans, strict=True)}
    spans_token = _handling_spans.set(by_event)
    context_token = otel_context.attach(trace.set_span_in_context(spans[0])) if len(spans) == 1 else None
    try:
        yield spans
    except BaseException as error:
        for span in spans:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        raise
    finally:
        if context_token is not None:
            otel_context.detach(context_token)
        _handling_spans.reset(spans_token)
        for span in spans:
            span.end()


@contextlib.contextmanager
def continuing(traceparent: str | None, tracestate: str | None, name: str, *,
               kind: SpanKind = SpanKind.INTERNAL, attributes: dict[str, Any] | None = None) -> Iterator[Span]:
    """A span, current while the block runs, that continues a stored trace
    context (a new trace when there is none)."""
    with _tracer.start_as_current_span(name, context=context_from_headers(traceparent, tracestate), kind=kind,
                                       attributes=attributes) as span:
        yield span


@contextlib.contextmanager
def in_trace_of(traceparent: bytes | str | None) -> Iterator[None]:
    """Log lines in the block carry the trace of a record's traceparent
    header (for lines about a record, outside any span of ours)."""
    if isinstance(traceparent, bytes):
        traceparent = traceparent.decode("latin-1")
    token = otel_context.attach(context_from_headers(traceparent)) if traceparent else None
    try:
        yield
    finally:
        if token is not None:
            otel_context.detach(token)
