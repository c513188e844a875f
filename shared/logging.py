"""Structured JSON logs with the current request id, event id and trace id on every line."""

import logging
import sys
from contextvars import ContextVar

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
event_id_var: ContextVar[str | None] = ContextVar("event_id", default=None)


class _ContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.request_id = request_id_var.get()
        record.event_id = event_id_var.get()
        # The logging instrumentation (shared.tracing) puts the current span's
        # ids on each record ("0": no span); they are written under our names.
        fields = record.__dict__
        trace_id, span_id = fields.pop("otelTraceID", None), fields.pop("otelSpanID", None)
        fields.pop("otelTraceSampled", None)
        fields.pop("otelServiceName", None)
        if trace_id is None:  # not instrumented in this process: look them up
            span_context = trace.get_current_span().get_span_context()
            if span_context.is_valid:
                trace_id, span_id = format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")
        if trace_id == "0":
            trace_id = span_id = None
        record.trace_id, record.span_id = trace_id, span_id
        return True


def configure_logging(*, service: str, level: str = "INFO", json: bool = True) -> None:
    """Route every logger (ours, uvicorn's, aiokafka's) through one handler."""
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_ContextFilter(service))
    if json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(service)s %(request_id)s %(event_id)s"
                " %(trace_id)s %(span_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(service)s %(name)s [%(request_id)s %(event_id)s %(trace_id)s] %(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka logs every reconnect attempt at ERROR/WARNING; keep them, but not its debug chatter.
    logging.getLogger("aiokafka").setLevel(max(logging.INFO, logging.getLevelName(level)))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers[:] = []
        uvicorn_logger.propagate = True
    # Our own access line (shared.http_middleware) has the route, status and duration.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
