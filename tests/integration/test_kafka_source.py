"""The Kafka source against the real broker: records in hand at a revocation are not skipped."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from kafka import KafkaProducer

from streamer.broker.sources import KafkaSource, RebalanceListener
from streamer.records import SourceRecord
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
