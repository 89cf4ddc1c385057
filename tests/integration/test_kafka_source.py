"""The Kafka sources against the real broker: records in hand at a revocation are not skipped;
librdkafka's lost commits are sent again."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer

from streamer.broker.admin import committed_offsets
from streamer.broker.sources import KafkaSource, RebalanceListener
from streamer.records import SourceRecord, next_offsets
from tests.conftest import Broker

POLL_DEADLINE_S = 60.0
"""Joining the group and the first fetch, on a loaded 2-core machine: seconds, not minutes."""


def _next_batch(source: KafkaSource) -> list[SourceRecord]:
    deadline = time.monotonic() + POLL_DEADLINE_S
    while not (records := source.poll()):
        assert time.monotonic() < deadline, "nothing polled in time"
    return records


def test_records_in_hand_at_a_revocation_are_read_again_when_the_partition_comes_back(
    kafka_broker: Broker, make_topic: Callable[..., str]
) -> None:
    """kafka-python 3 keeps a partition's position when a rebalance gives it back to the same
    consumer, so records fetched for the batch being collected, and released uncommitted at the
    revocation, must be sought back to: else the next batch starts after them and they are
    never scored (seen as a daemon stuck short of its last records after a group change)."""
    topic = make_topic(partitions=1)
    producer = KafkaProducer(acks="all", **kafka_broker.client_options())
    for offset in range(20):
        producer.send(topic, key=b"k", value=str(offset).encode())
    producer.flush()
    producer.close()
    config = kafka_broker.config(
        kafka={"input_topic": topic, "group_id": f"source-{uuid.uuid4().hex[:8]}"},
        batch={"max_records": 5, "max_wait_ms": 100},
    )
    source = KafkaSource(config.kafka, config.batch)
    try:
        assert [r.offset for r in _next_batch(source)] == [0, 1, 2, 3, 4]
        deadline = time.monotonic() + POLL_DEADLINE_S
        while not source.in_hand:  # the next batch, fetched but not yet served
            source.in_hand = source.poll_fetched()
            assert time.monotonic() < deadline, "nothing fetched in time"
        assert source.in_hand[0].offset == 5
        listener = RebalanceListener(source)
        owned = source.consumer.assignment()
        listener.on_partitions_revoked(owned)
        listener.on_partitions_assigned(owned)  # the same partition, its position kept
        assert source.in_hand == []
        assert _next_batch(source)[0].offset == 5, "the released records come again"
    finally:
        source.close()


class LostCommits:
    """A librdkafka consumer whose commits are lost on the way to the broker, as asynchronous
    commits sent around a broker outage were: everything else goes to the real consumer."""

    def __init__(self, consumer: Any) -> None:
        self.consumer, self.lost = consumer, 0

    def commit(self, **commit: Any) -> None:
        self.lost += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.consumer, name)


def test_an_idle_librdkafka_source_commits_again_what_the_group_does_not_hold(
    kafka_broker: Broker, make_topic: Callable[..., str]
) -> None:
    """A commit that never reached the group is sent again once the source is idle: it asks the
    group for its committed offsets every ``RECHECK_S`` and commits again each partition whose
    last commit is not there, whatever librdkafka answered for it (here: that it landed)."""
    from confluent_kafka import TopicPartition as RdPartition

    from streamer.broker.librdkafka import RdkafkaSource

    topic = make_topic(partitions=2)
    producer = KafkaProducer(acks="all", **kafka_broker.client_options())
    for offset in range(20):
        producer.send(topic, key=f"k{offset % 4}".encode(), value=str(offset).encode())
    producer.flush()
    producer.close()
    group = f"source-{uuid.uuid4().hex[:8]}"
    config = kafka_broker.config(
        kafka={"input_topic": topic, "group_id": group, "client": "librdkafka"},
        batch={"max_records": 100, "max_wait_ms": 100},
    )
    source = RdkafkaSource(config.kafka, config.batch)
    try:
        records: list[SourceRecord] = []
        deadline = time.monotonic() + POLL_DEADLINE_S
        while len(records) < 20:
            records += source.poll()
            assert time.monotonic() < deadline, "nothing polled in time"
        real = source.consumer
        lossy = LostCommits(real)
        source.consumer = lossy  # type: ignore[assignment]
        source.commit(records)
        assert lossy.lost == 1
        source.consumer = real
        answered = [RdPartition(topic, p, o) for (_, p), o in next_offsets(records).items()]
        source._commit_answered(None, answered)  # and librdkafka says it landed
        options = kafka_broker.client_options()
        deadline = time.monotonic() + POLL_DEADLINE_S
        while sum(committed_offsets(options, group, topic).values()) < 20:
            assert not source.poll(), "nothing more to read"
            assert time.monotonic() < deadline, "the lost commit was never sent again"
    finally:
        source.close()
