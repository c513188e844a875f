"""The CloudEvents envelope and its binary-mode Kafka binding, without a broker."""

import json
from datetime import UTC, datetime

import pytest

from shared.events import InvalidEvent, from_json, from_kafka, new_event, to_json, to_kafka


def test_binary_mode_round_trip_keeps_every_attribute():
    moment = datetime(2026, 6, 5, 9, 30, tzinfo=UTC)
    event = new_event(
        type="org.caj-tracker.test.happened.v1", source="/tests", subject="caj-2006-2-1-04",
        data={"countries": ["TJ", "AF"], "note": "Душанбе"}, id="evt-1", time=moment,
    )
    record = to_kafka(event, key="caj-2006-2-1-04")
    headers = dict(record.headers)
    assert headers["ce_type"] == b"org.caj-tracker.test.happened.v1"
    assert headers["content-type"] == b"application/json"
    assert record.key == b"caj-2006-2-1-04"

    parsed = from_kafka(key=record.key, value=record.value, headers=record.headers)
    assert parsed.get_id() == "evt-1"
    assert parsed.get_source() == "/tests"
    assert parsed.get_type() == "org.caj-tracker.test.happened.v1"
    assert parsed.get_subject() == "caj-2006-2-1-04"
    assert parsed.get_time() == moment
    assert parsed.get_specversion() == "1.0"
    assert parsed.get_data() == {"countries": ["TJ", "AF"], "note": "Душанбе"}


def test_event_without_data_is_a_tombstone_with_headers():
    event = new_event(type="org.caj-tracker.test.removed.v1", source="/tests", data=None)
    record = to_kafka(event, key="k")
    assert record.value is None
    parsed = from_kafka(key=record.key, value=record.value, headers=record.headers)
    assert parsed.get_type() == "org.caj-tracker.test.removed.v1"
    assert parsed.get_data() is None


def test_structured_json_round_trip_for_storage():
    event = new_event(type="t.v1", source="/tests", data={"a": 1}, subject="s")
    again = from_json(to_json(event))
    assert again.get_attributes() == event.get_attributes()
    assert again.get_data() == {"a": 1}


@pytest.mark.parametrize(
    ("headers", "value", "reason"),
    [
        ([("ce_source", b"/x"), ("ce_type", b"t"), ("ce_specversion", b"1.0")], b"{}", "missing header ce_id"),
        ([("ce_id", b"1"), ("ce_source", b"/x"), ("ce_type", b"t"), ("ce_specversion", b"0.3")], b"{}", "specversion"),
        ([("ce_id", b"1"), ("ce_source", b"/x"), ("ce_type", b"t"), ("ce_specversion", b"1.0")], b"{not json",
         "not valid JSON"),
        ([], b"{}", "missing header"),
    ],
)
def test_malformed_records_are_refused_with_a_reason(headers, value, reason):
    with pytest.raises(InvalidEvent, match=reason):
        from_kafka(key=None, value=value, headers=headers)


@pytest.mark.parametrize("data", [{"countries": ["TJ"], "n": 1, "text": "Душанбе"}, None])
def test_the_relays_fast_path_writes_what_the_sdk_writes(data):
    from shared.events import record_from_envelope

    event = new_event(type="t.v1", source="/tests", subject="caj-2006-2-1-04", data=data)
    fast = record_from_envelope(to_json(event), key="caj-2006-2-1-04")
    sdk = to_kafka(event, key="caj-2006-2-1-04")
    assert fast.key == sdk.key
    assert dict(fast.headers) == dict(sdk.headers)
    if data is None:
        assert fast.value is None and sdk.value is None
    else:
        assert json.loads(fast.value) == json.loads(sdk.value)
    parsed = from_kafka(key=fast.key, value=fast.value, headers=fast.headers)
    assert parsed.get_attributes() == dict(event.get_attributes(), partitionkey="caj-2006-2-1-04")


def test_envelope_built_directly_reads_back_as_the_sdk_event():
    from shared.events import envelope_json

    event_id, document = envelope_json(type="t.v1", source="/tests", subject="s", data={"a": ["TJ"]})
    event = from_json(document)
    reference = new_event(type="t.v1", source="/tests", subject="s", data={"a": ["TJ"]}, id=event_id,
                          time=event.get_time())
    assert event.get_attributes() == reference.get_attributes()
    assert event.get_data() == {"a": ["TJ"]}
    assert json.loads(document) == json.loads(to_json(reference))
    _, tombstone = envelope_json(type="t.removed.v1", source="/tests", subject="s", data=None)
    assert "data" not in json.loads(tombstone) and from_json(tombstone).get_data() is None


def test_envelope_built_directly_keeps_the_time_it_is_given():
    from shared.events import envelope_json

    moment = datetime(2026, 6, 5, 9, 30, 15, tzinfo=UTC)
    _, document = envelope_json(type="t.v1", source="/tests", subject="s", data={"a": 1}, time=moment)
    assert json.loads(document)["time"] == "2026-06-05T09:30:15Z"
    assert from_json(document).get_time() == moment
    with pytest.raises(ValueError, match="zone"):
        envelope_json(type="t.v1", source="/tests", subject="s", data={"a": 1}, time=datetime(2026, 6, 5, 9, 30))
