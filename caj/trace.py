"""`caj trace`: one request's path through the services, read from their logs.

Every log line is JSON with `trace_id` (shared/logging.py). A request id (the
`X-Request-ID` a service echoed back) names the lines of one HTTP request;
their trace ids then name every line, in any service, of what that request
set off: the outbox event, each consumer that handled it, each webhook
attempt. A trace id is accepted as well.
"""

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# shared/logging.py writes `time` as logging's asctime.
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S,%f"


@dataclass(frozen=True)
class LogLine:
    at: datetime
    service: str
    logger: str
    level: str
    message: str
    trace_id: str | None
    request_id: str | None
    event_id: str | None
    source: str  # file:line, to find the line again


def read_log_lines(paths: Iterable[Path]) -> Iterator[LogLine]:
    """The JSON lines of the files; others (a traceback, a line cut by a
    crash) are passed over."""
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as lines:
            for number, text in enumerate(lines, start=1):
                if not text.startswith("{"):
                    continue
                try:
                    fields = json.loads(text)
                    at = datetime.strptime(fields["time"], _TIME_FORMAT)
                except (ValueError, KeyError, TypeError):
                    continue
                yield LogLine(at=at, service=str(fields.get("service") or path.stem),
                              logger=str(fields.get("logger", "")), level=str(fields.get("level", "")),
                              message=str(fields.get("message", "")), trace_id=fields.get("trace_id"),
                              request_id=fields.get("request_id"), event_id=fields.get("event_id"),
                              source=f"{path.name}:{number}")


def follow(lines: Iterable[LogLine], wanted: str) -> list[LogLine]:
    """The lines of every trace that `wanted` (a request id or a trace id)
    belongs to, oldest first (lines of the same moment keep their order)."""
    every = list(lines)
    traces = {line.trace_id for line in every if line.trace_id and wanted in (line.request_id, line.trace_id)}
    return sorted((line for line in every if line.trace_id in traces), key=lambda line: line.at)


def render(lines: list[LogLine]) -> list[str]:
    """One row per line: the time since the first line, the service, the
    logger and the message (with the event id where an event was handled)."""
    if not lines:
        return []
    first = lines[0].at
    width = max(len(line.service) for line in lines)
    rows = []
    for line in lines:
        offset_ms = (line.at - first).total_seconds() * 1000
        event = f"  [event {line.event_id}]" if line.event_id else ""
        rows.append(f"{'+' + format(offset_ms, '.1f'):>10} ms  {line.service:<{width}}  {line.level:<7} {line.logger}: "
                    f"{line.message}{event}")
    return rows
