"""Creating topics against the real broker: only the missing ones are asked for, since a
locked-down cluster grants no CREATE permission on topics that already exist."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaAdminClient

from streamer.broker.admin import TopicSpec, create_topics, delete_topics
from streamer.broker.daemon import ensure_topics
from tests.conftest import Broker


def record_create_requests(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The topic names sent in CreateTopics requests from now on (the real client still sends
    them to the real broker)."""
    asked: list[str] = []
    create = KafkaAdminClient.create_topics

    def recording(self: KafkaAdminClient, new_topics: Any, *args: Any, **kwargs: Any) -> Any:
        asked.extend(new_topics)
        return create(self, new_topics, *args, **kwargs)

    monkeypatch.setattr(KafkaAdminClient, "create_topics", recording)
    return asked


def test_only_missing_topics_are_asked_for(
    kafka_broker: Broker, make_topic: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    options = kafka_broker.client_options()
    existing, absent = make_topic(), f"test.admin.{uuid.uuid4().hex[:8]}"
    create_requests = record_create_requests(monkeypatch)
    try:
        specs = [TopicSpec(existing), TopicSpec(absent, partitions=2)]
        assert create_topics(options, specs) == [absent]
        assert create_requests == [absent]
        assert create_topics(options, specs) == []
        assert create_requests == [absent], "no CreateTopics request once both exist"
    finally:
        delete_topics(options, [absent])


def test_the_daemon_asks_to_create_nothing_when_its_topics_exist(
    kafka_broker: Broker, make_topic: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = kafka_broker.config(
        kafka={
            "alerts_topic": make_topic(),
            "dead_letter_topic": make_topic(),
            "group_id": f"admin-{uuid.uuid4().hex[:8]}",
        }
    )
    state_topic = config.kafka.state_topic
    create_requests = record_create_requests(monkeypatch)
    try:
        ensure_topics(config)
        assert create_requests == [state_topic]
        ensure_topics(config)
        assert create_requests == [state_topic], "a second start asks to create nothing"
    finally:
        delete_topics(kafka_broker.client_options(), [state_topic])


def test_librdkafka_creates_only_missing_topics_and_never_creates_by_asking(
    kafka_broker: Broker, make_topic: Callable[..., str]
) -> None:
    """The daemon's topic questions on librdkafka: a probe that describes the cluster, a
    missing topic that stays missing when asked about, and only the missing topics created,
    with their partitions and configs."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    from streamer.broker import rdkafka_admin

    kafka = kafka_broker.config(kafka={"client": "librdkafka"}).kafka
    info = rdkafka_admin.probe_broker(kafka)
    assert info.brokers and info.cluster_id == kafka_broker.info.cluster_id
    existing, absent = make_topic(), f"test.admin.{uuid.uuid4().hex[:8]}"
    checker = rdkafka_admin.TopicChecker(kafka)
    assert checker.exists(existing)
    assert not checker.exists(absent) and not checker.exists(absent), "asking creates nothing"
    try:
        specs = [
            TopicSpec(existing),
            TopicSpec(absent, partitions=2, configs={"cleanup.policy": "compact"}),
        ]
        assert rdkafka_admin.create_topics(kafka, specs) == [absent]
        assert checker.exists(absent)
        assert rdkafka_admin.create_topics(kafka, specs) == [], "both exist now"
        admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
        assert len(admin.list_topics(absent, timeout=10).topics[absent].partitions) == 2
        (described,) = admin.describe_configs([ConfigResource("topic", absent)]).values()
        assert described.result()["cleanup.policy"].value == "compact"
    finally:
        delete_topics(kafka_broker.client_options(), [absent])
