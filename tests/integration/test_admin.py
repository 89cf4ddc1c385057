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
