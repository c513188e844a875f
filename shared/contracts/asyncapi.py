"""The AsyncAPI 3.0 document of every topic and event, built from the registry."""

import re

from shared.contracts.registry import CONSUMERS, EVENTS
from shared.topics import ALL_TOPICS, TopicSpec

CLOUDEVENTS_HEADERS = {
    "type": "object",
    "description": "CloudEvents 1.0 attributes in Kafka binary content mode",
    "required": ["ce_id", "ce_source", "ce_type", "ce_specversion"],
    "properties": {
        "ce_id": {"type": "string", "description": "Unique with ce_source; consumers dedupe on the pair"},
        "ce_source": {"type": "string"},
        "ce_type": {"type": "string"},
        "ce_specversion": {"type": "string", "const": "1.0"},
        "ce_time": {"type": "string", "format": "date-time"},
        "ce_subject": {"type": "string", "description": "The entity the event is about (also the record key)"},
        "content-type": {"type": "string", "const": "application/json"},
        # The CloudEvents distributed-tracing extension: the W3C trace context
        # of the request (or the handled record) the event came from.
        "ce_traceparent": {"type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                           "description": "W3C traceparent of the request or record the event came from"},
        "ce_tracestate": {"type": "string", "description": "W3C tracestate, when the trace has one"},
    },
}


def _camel(text: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", text)
    return words[0].lower() + "".join(word.capitalize() for word in words[1:] if word)


def _message_name(event_type: str) -> str:
    # org.caj-tracker.requests.offer.activated.v1 -> requestsOfferActivatedV1
    return _camel(event_type.removeprefix("org.caj-tracker."))


def _channel_name(topic: TopicSpec) -> str:
    return _camel(topic.name)


def build_asyncapi() -> dict:
    schemas: dict = {}
    messages: dict = {}
    for spec in EVENTS:
        name = _message_name(spec.type)
        if spec.model is None:
            payload = {"type": "null", "description": "Tombstone: no value"}
        else:
            schema = spec.model.model_json_schema(ref_template="#/components/schemas/{model}")
            for definition_name, definition in schema.pop("$defs", {}).items():
                schemas[definition_name] = definition
            schemas[spec.model.__name__] = schema
            payload = {"$ref": f"#/components/schemas/{spec.model.__name__}"}
        messages[name] = {
            "name": spec.type,
            "title": spec.type.rsplit(".", 2)[-2].replace("-", " "),
            "summary": spec.summary,
            "contentType": "application/json",
            "headers": CLOUDEVENTS_HEADERS,
            "payload": payload,
            "bindings": {"kafka": {"key": {"type": "string", "description": spec.key}, "bindingVersion": "0.5.0"}},
        }

    channels: dict = {}
    for topic in ALL_TOPICS:
        topic_messages = {_message_name(s.type): {"$ref": f"#/components/messages/{_message_name(s.type)}"}
                          for s in EVENTS if s.topic.name == topic.name}
        channels[_channel_name(topic)] = {
            "address": topic.name,
            "description": topic.description,
            "messages": topic_messages,
            "bindings": {"kafka": {
                "topic": topic.name, "partitions": topic.partitions, "replicas": 1,
                "topicConfiguration": {"cleanup.policy": [topic.config.get("cleanup.policy", "delete")]},
                "bindingVersion": "0.5.0",
            }},
        }

    operations: dict = {}
    for topic in ALL_TOPICS:
        producers = sorted({s.producer for s in EVENTS if s.topic.name == topic.name})
        for producer in producers:
            operations[_camel(f"{producer} sends {topic.name}")] = {
                "action": "send",
                "summary": f"{producer} publishes to {topic.name}",
                "channel": {"$ref": f"#/channels/{_channel_name(topic)}"},
                "messages": [{"$ref": f"#/channels/{_channel_name(topic)}/messages/{_message_name(s.type)}"}
                             for s in EVENTS if s.topic.name == topic.name and s.producer == producer],
            }
    for consumer in CONSUMERS:
        for topic in consumer.topics:
            operation = {
                "action": "receive",
                "summary": f"{consumer.service}: {consumer.summary}",
                "channel": {"$ref": f"#/channels/{_channel_name(topic)}"},
            }
            if consumer.group_id:
                operation["bindings"] = {"kafka": {"groupId": {"type": "string", "enum": [consumer.group_id]},
                                                   "bindingVersion": "0.5.0"}}
            operations[_camel(f"{consumer.service} receives {topic.name}")] = operation

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "caj-tracker events",
            "version": "1.0.0",
            "description": (
                "Every topic and event of caj-tracker. Events are CloudEvents 1.0 in Kafka binary mode: "
                "attributes in ce_* headers, data as JSON in the value. Types are versioned (.v1); "
                "consumers ignore unknown fields and types. Generated from shared/contracts: "
                "`caj asyncapi > docs/asyncapi.yaml`."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "127.0.0.1:9092", "protocol": "kafka", "description": "make up"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": dict(sorted(schemas.items()))},
    }
