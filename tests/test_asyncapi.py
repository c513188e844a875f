"""The AsyncAPI document describes every topic and event, and agrees with the
event models the services use."""

import importlib
import pkgutil

import yaml

import shared.contracts
from shared.contracts.asyncapi import build_asyncapi
from shared.contracts.registry import BY_TYPE, EVENTS
from shared.settings import REPO_ROOT
from shared.topics import ALL_TOPICS

DOCUMENT_PATH = REPO_ROOT / "docs" / "asyncapi.yaml"


def _resolve(document: dict, ref: str):
    node = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_committed_document_is_up_to_date():
    committed = yaml.safe_load(DOCUMENT_PATH.read_text())
    assert committed == yaml.safe_load(yaml.safe_dump(build_asyncapi())), (
        "docs/asyncapi.yaml is stale: run `.venv/bin/caj asyncapi > docs/asyncapi.yaml`"
    )


def test_every_event_type_in_the_contracts_is_documented():
    declared = set()
    for module_info in pkgutil.iter_modules(shared.contracts.__path__):
        module = importlib.import_module(f"shared.contracts.{module_info.name}")
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, str) and value.startswith("org.caj-tracker.") and value.endswith(".v1"):
                declared.add(value)
    assert declared == set(BY_TYPE)
    document = build_asyncapi()
    documented = {message["name"] for message in document["components"]["messages"].values()}
    assert documented == declared


def test_channels_are_the_declared_topics_with_their_settings():
    document = build_asyncapi()
    channels = {channel["address"]: channel for channel in document["channels"].values()}
    assert set(channels) == {topic.name for topic in ALL_TOPICS}
    for topic in ALL_TOPICS:
        binding = channels[topic.name]["bindings"]["kafka"]
        assert binding["partitions"] == topic.partitions
        assert binding["topicConfiguration"]["cleanup.policy"] == [topic.config.get("cleanup.policy", "delete")]


def test_payload_schemas_are_the_models_schemas_and_every_ref_resolves():
    document = build_asyncapi()
    assert document["asyncapi"] == "3.0.0"
    for ref in _refs(document):
        _resolve(document, ref)  # raises KeyError when dangling
    messages = {message["name"]: message for message in document["components"]["messages"].values()}
    for spec in EVENTS:
        payload = messages[spec.type]["payload"]
        if spec.model is None:
            assert payload["type"] == "null"
            continue
        schema = _resolve(document, payload["$ref"])
        expected = spec.model.model_json_schema(ref_template="#/components/schemas/{model}")
        expected.pop("$defs", None)
        assert schema == expected
    for operation in document["operations"].values():
        assert operation["action"] in ("send", "receive")
