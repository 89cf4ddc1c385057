"""``KafkaSource.lag`` is a metric: a broker that does not answer leaves partitions out of it,
never fails the batch (it used to kill the fetch process, and the daemon with it, in broker
outages; the consumer is a stand-in because the outage's timing cannot be forced on a real
broker)."""

from __future__ import annotations

from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaConnectionError

from streamer.broker.sources import KafkaSource


class OutageConsumer:
    """Partition 0 knows its position; asking for partition 1's needs the absent broker."""

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("in", 0), TopicPartition("in", 1), TopicPartition("in", 2)}

    def highwater(self, partition: TopicPartition) -> int | None:
        return None if partition.partition == 2 else 100

    def position(self, partition: TopicPartition, timeout_ms: Any = None) -> int:
        assert timeout_ms == 0, "a metric never waits on the broker"
        if partition.partition == 1:
            raise KafkaConnectionError("111 ECONNREFUSED")
        return 60


def test_a_position_the_absent_broker_would_give_leaves_its_partition_out() -> None:
    source = object.__new__(KafkaSource)
    source.consumer = OutageConsumer()  # type: ignore[assignment]
    assert source.lag() == {("in", 0): 40}
