"""The AsyncAPI document describes every topic and event, and agrees with the
event models the services use and with the consumers they run."""

import importlib
import pkgutil
import time

import pytest
import yaml
from fastapi.testclient import TestClient

import shared.contracts
from shared.contracts.asyncapi import build_asyncapi
from shared.contracts.registry import BY_TYPE, CONSUMERS, EVENTS
from shared.migrations import upgrade
from shared.service import ServiceRuntime, registered_consumers
from shared.settings import REPO_ROOT, ServiceSettings
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
            if (name.isupper() and isinstance(value, str)
                    and value.startswith("org.caj-tracker.") and value.endswith(".v1")):
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


# -- consumers are the registry's ------------------------------------------------------
def handle_nothing(session, event) -> None:
    return None


@pytest.mark.parametrize(("service", "handlers", "complaint"), [
    ("requests", {}, "no handler for ['requests.offers']"),
    ("requests", {"requests.offers": handle_nothing, "requests.audit": handle_nothing},
     "groups it does not list: ['requests.audit']"),
    ("catalog", {"catalog.activations": handle_nothing, "catalog.audit": handle_nothing},
     "groups it does not list: ['catalog.audit']"),
    ("catalog", {}, "no handler for ['catalog.activations']"),
])
def test_handlers_that_do_not_match_the_registry_are_refused_before_anything_starts(
        service, handlers, complaint, tmp_path):
    settings = ServiceSettings(service_name=service, database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}")
    with pytest.raises(ValueError) as refused:
        ServiceRuntime(settings=settings, migrations_package=f"{service}_service", handlers=handlers)
    assert complaint in str(refused.value)


def test_the_registrys_groups_and_identity_readers_drive_the_runtime():
    groups, identity = registered_consumers("notifications", {"notifications.router": handle_nothing})
    assert [(spec.group_id, [topic.name for topic in spec.topics]) for spec in groups] == [
        ("notifications.router", ["requests.events", "catalog.commitments", "catalog.progress"])]
    assert identity
    groups, identity = registered_consumers("catalog", {"catalog.activations": handle_nothing})
    assert [(spec.group_id, [topic.name for topic in spec.topics]) for spec in groups] == [
        ("catalog.activations", ["requests.events"])]
    assert identity


SERVICES = {
    "catalog": ("catalog_service.main", "catalog_service.config", "CatalogSettings"),
    "requests": ("requests_service.main", "requests_service.config", "RequestsSettings"),
    "notifications": ("notifications_service.main", "notifications_service.config", "NotificationsSettings"),
}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_service_runs_exactly_the_consumers_the_registry_lists(service, kafka_bootstrap, tmp_path):
    main, config, settings_class = SERVICES[service]
    database_url = f"sqlite:///{tmp_path / 'service.sqlite3'}"
    upgrade(f"{service}_service", database_url)
    settings = getattr(importlib.import_module(config), settings_class)(
        database_url=database_url, kafka_bootstrap_servers=kafka_bootstrap, log_json=False)
    app = importlib.import_module(main).create_app(settings)
    runtime = app.state.runtime
    with TestClient(app):
        deadline = time.monotonic() + 60
        while not runtime.kafka_connected:
            assert time.monotonic() < deadline, "the service never connected to Kafka"
            time.sleep(0.1)
        running = {(consumer.group_id, tuple(consumer.topics)) for consumer in runtime.consumers}
        follows_identity = runtime.key_store is not None and runtime.key_store.running
    listed = [spec for spec in CONSUMERS if spec.service == service]
    assert running == {(spec.group_id, tuple(topic.name for topic in spec.topics))
                       for spec in listed if spec.group_id is not None}
    assert follows_identity == any(spec.group_id is None for spec in listed)
