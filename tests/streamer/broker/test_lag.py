"""``KafkaSource.lag`` is a metric: a broker that does not answer leaves partitions out of it,
never fails the batch (it used to kill the fetch process, and the daemon with it, in broker
outages; the consumer is a stand-in because the outage's timing cannot be forced on a real
broker). It counts from the first record not committed, never from the consumer's position,
which runs ahead of the commits (the real-broker side: tests/integration/test_consumer_lag.py)."""

from __future__ import annotations

from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaConnectionError

from streamer.broker.sources import CommittedLag, KafkaSource
from streamer.records import SourceRecord


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
    source.committed_lag = CommittedLag()
    assert source.lag() == {("in", 0): 40}


def records(partition: int, first: int, last: int) -> list[SourceRecord]:
    return [SourceRecord("in", partition, o, b"k", b"v", 0, ()) for o in range(first, last)]


def test_records_handed_out_and_not_committed_count_though_the_position_is_past_them() -> None:
    lag = CommittedLag()
    fetched = {("in", 0): (300, 300), ("in", 1): (50, 20)}  # partition 0 fetched to its end
    assert lag.lag(fetched) == {("in", 0): 0, ("in", 1): 30}, "nothing handed out: the position"
    lag.handed_out(records(0, 0, 100))
    lag.handed_out(records(0, 100, 200))
    assert lag.lag(fetched)[("in", 0)] == 300, "nothing committed: all of it"
    lag.committed({("in", 0): 100})
    lag.handed_out(records(0, 200, 300))
    assert lag.lag(fetched)[("in", 0)] == 200, "from the commit, whatever was handed out since"
    lag.committed({("in", 0): 300})
    assert lag.lag(fetched) == {("in", 0): 0, ("in", 1): 30}
    lag.handed_out(records(1, 20, 30))
    lag.forget([("in", 1)])
    assert lag.lag(fetched)[("in", 1)] == 30, "a moved partition counts from its position again"
