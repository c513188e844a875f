"""Topics are declared in code and created with the admin client, with their
partitions and cleanup policy, never by broker auto-creation."""

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from shared.kafka import make_producer
from shared.topics import ALL_TOPICS, CATALOG_COMMITMENTS, TopicSpec, ensure_topics


async def _describe(bootstrap: str, names: list[str]):
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = await admin.describe_topics(names)
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
        return topics, configs
    finally:
        await admin.close()


def _config_values(config_responses) -> dict[str, dict[str, str]]:
    values: dict[str, dict[str, str]] = {}
    for response in config_responses:
        for resource in response.resources:
            # (error_code, error_message, resource_type, resource_name, config_entries)
            name, entries = resource[3], resource[4]
            values[name] = {entry[0]: entry[1] for entry in entries}
    return values


async def test_declared_topics_are_created_with_their_partitions_and_policy(kafka_bootstrap):
    await ensure_topics(kafka_bootstrap, ALL_TOPICS)
    await ensure_topics(kafka_bootstrap, ALL_TOPICS)  # idempotent
    names = [spec.name for spec in ALL_TOPICS]
    topics, configs = await _describe(kafka_bootstrap, names)
    partitions = {topic["topic"]: len(topic["partitions"]) for topic in topics}
    assert partitions == {spec.name: spec.partitions for spec in ALL_TOPICS}
    values = _config_values(configs)
    assert values[CATALOG_COMMITMENTS.name]["cleanup.policy"] == "compact"
    for spec in ALL_TOPICS:
        assert values[spec.name]["cleanup.policy"] == spec.config.get("cleanup.policy", "delete")


async def test_broker_does_not_create_topics_by_accident(kafka_bootstrap, topic_name):
    producer = make_producer(kafka_bootstrap, client_id="test")
    await producer.start()
    try:
        with pytest.raises(KafkaError):
            await asyncio.wait_for(producer.send_and_wait(topic_name, b"{}"), timeout=30)
    finally:
        await producer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert topic_name not in await admin.list_topics()
    finally:
        await admin.close()


def test_topic_names_are_unique_and_compaction_only_where_state_is_kept():
    names = [spec.name for spec in ALL_TOPICS]
    assert len(names) == len(set(names))
    assert [spec.name for spec in ALL_TOPICS if spec.compacted] == ["catalog.commitments", "identity.keys"]
    assert isinstance(CATALOG_COMMITMENTS, TopicSpec)


async def test_a_topic_the_broker_refuses_is_an_error_not_a_silent_success(kafka_bootstrap, topic_name):
    from shared.topics import TopicCreationError

    bad = TopicSpec(topic_name, partitions=1, config={"cleanup.policy": "no-such-policy"})
    with pytest.raises(TopicCreationError, match=topic_name):
        await ensure_topics(kafka_bootstrap, [bad], retry_for=10)


async def test_compacted_topics_keep_tombstones_for_thirty_days(kafka_bootstrap):
    await ensure_topics(kafka_bootstrap, ALL_TOPICS)
    _, configs = await _describe(kafka_bootstrap, ["catalog.commitments", "identity.keys"])
    values = _config_values(configs)
    for name in ("catalog.commitments", "identity.keys"):
        assert values[name]["delete.retention.ms"] == str(30 * 24 * 3600 * 1000)
