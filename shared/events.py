"""The CloudEvents 1.0 envelope and its Kafka protocol binding.

Binary content mode: the event's attributes travel as `ce_*` record headers and
the record value is the event's `data` as JSON. Chosen over structured mode
because
- a removed entity on a compacted topic must be a real tombstone (null value),
  and binary mode still carries its id/type/time in headers;
- consumers and the dead-letter path can read the type and id without parsing
  a possibly broken value;
- a consumer that knows nothing of CloudEvents still reads plain JSON data.
"""

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

JSON_CONTENT_TYPE = "application/json"
_FORMAT = JSONFormat()


class InvalidEvent(ValueError):
    """A Kafka record that is not a well-formed CloudEvent of ours."""


@dataclass(frozen=True)
class KafkaRecord:
    """What goes on the wire: ready for `producer.send(topic, value, key, headers)`."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def new_event(
    *,
    type: str,
    source: str,
    data: dict[str, Any] | None,
    subject: str | None = None,
    id: str | None = None,
    time: datetime | None = None,
) -> CloudEvent:
    attributes: dict[str, Any] = {
        "id": id or str(uuid.uuid4()),
        "source": source,
        "type": type,
        "time": time or datetime.now(UTC),
    }
    if subject is not None:
        attributes["subject"] = subject
    if data is not None:
        attributes["datacontenttype"] = JSON_CONTENT_TYPE
    return CloudEvent(attributes=attributes, data=data)


def to_kafka(event: CloudEvent, *, key: str | None) -> KafkaRecord:
    """Binary mode. `data=None` becomes a null value: a tombstone on compacted topics."""
    message = ce_kafka.to_binary(event, _FORMAT, key_mapper=lambda _event: key)
    value = message.value if event.get_data() is not None else None
    encoded_key = key.encode() if isinstance(key, str) else key
    return KafkaRecord(key=encoded_key, value=value, headers=list(message.headers.items()))


def from_kafka(*, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | tuple) -> CloudEvent:
    """Parse a binary-mode record; raise InvalidEvent with a specific reason."""
    header_map = {name: raw for name, raw in headers}
    for required in ("ce_id", "ce_source", "ce_type", "ce_specversion"):
        if required not in header_map:
            raise InvalidEvent(f"missing header {required}")
    if header_map["ce_specversion"] != b"1.0":
        raise InvalidEvent(f"unsupported specversion {header_map['ce_specversion']!r}")
    if value is not None:
        # The SDK falls back to returning a string when JSON does not parse;
        # for us that is a broken message, not data.
        try:
            json.loads(value)
        except (UnicodeDecodeError, ValueError) as error:
            raise InvalidEvent(f"value is not valid JSON: {error}") from error
    try:
        return cast(CloudEvent, ce_kafka.from_binary(
            ce_kafka.KafkaMessage(headers=header_map, key=key, value=value or b""), _FORMAT, CloudEvent
        ))
    except Exception as error:  # the SDK raises several validation error types
        raise InvalidEvent(f"not a valid CloudEvent: {error}") from error


def to_json(event: CloudEvent) -> str:
    """Structured JSON as the SDK writes it: the reference `envelope_json` is
    checked against."""
    return _FORMAT.write(event).decode()


def from_json(document: str | bytes) -> CloudEvent:
    return cast(CloudEvent, _FORMAT.read(CloudEvent, document))


def record_from_envelope(envelope: str, *, key: str | None) -> KafkaRecord:
    """`to_kafka(from_json(envelope))` without building a CloudEvent: the
    relay's hot path. Same headers and value as the SDK's binary mode
    (tests/shared/test_events.py holds the two side by side)."""
    document = json.loads(envelope)
    data = document.pop("data", None)
    headers: list[tuple[str, bytes]] = []
    for name, value in document.items():
        if name == "datacontenttype":
            headers.append(("content-type", str(value).encode()))
        elif value is not None and name != "data_base64":
            headers.append((f"ce_{name}", str(value).encode()))
    value = None if data is None else json.dumps(data).encode()
    return KafkaRecord(key=key.encode() if key is not None else None, value=value, headers=headers)


def envelope_json(
    *, type: str, source: str, subject: str | None, data: dict | None, time: datetime | None = None,
    traceparent: str | None = None, tracestate: str | None = None,
) -> tuple[str, str]:
    """A new event's structured JSON, built directly: (event id, JSON). The
    outbox stores this; `from_json` reads it back as the same CloudEvent that
    `new_event` would make (tests/shared/test_events.py). `time` defaults to
    now and must carry a zone (CloudEvents times are RFC 3339). `traceparent`
    and `tracestate` are the distributed-tracing extension: they go out as
    `ce_traceparent` and `ce_tracestate` headers."""
    moment = time or datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("an event's time must carry a zone")
    event_id = str(uuid.uuid4())
    document: dict[str, Any] = {
        "id": event_id,
        "source": source,
        "type": type,
        "time": moment.isoformat().replace("+00:00", "Z"),
    }
    if subject is not None:
        document["subject"] = subject
    if data is not None:
        document["datacontenttype"] = JSON_CONTENT_TYPE
    if traceparent:
        document["traceparent"] = traceparent
        if tracestate:
            document["tracestate"] = tracestate
    document["specversion"] = "1.0"
    if data is not None:
        document["data"] = data
    return event_id, json.dumps(document, ensure_ascii=False)
