"""A range of a topic read by librdkafka, as ``streamer.broker.range_source.TopicRangeSource``
reads it with kafka-python: every partition from an offset or a time to an offset or a time, by
assignment, without joining a consumer group, committed records only.

Its consumer assigns itself the partitions and never joins the group it must name
(``<group>.range``: ``streamer.broker.librdkafka.assigning_consumer``). A partition's end is
reached when a record at or past it arrives or librdkafka reports the partition's end (its
end-of-partition event), which also covers a range that ends on transaction markers, never
delivered to a ``read_committed`` reader.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import structlog
from confluent_kafka import KafkaError
from confluent_kafka import TopicPartition as RdPartition

from streamer.broker.librdkafka import (
    assigning_consumer,
    end_offset,
    record_of,
    topic_partitions,
    usable,
)
from streamer.broker.range_source import RangeBound, RangeReading, bound_offsets, settled
from streamer.config import KafkaConfig
from streamer.errors import TopicError
from streamer.records import Partition, SourceRecord

log = structlog.get_logger(__name__)


class RdkafkaRangeSource(RangeReading):
    """Every partition of ``topic`` from ``start`` (inclusive) to ``end`` (exclusive), in
    batches of at most ``batch_size``; the ends are fixed when the source opens (asked until
    two answers agree, unless not ``settle``: a reader of checkpoints at a partition's
    assignment takes the first answer, as kafka-python's does). Raises
    ``TopicError`` when the topic does not exist, or when no record arrives for ``timeout_s``
    before the range's end."""

    def __init__(
        self,
        kafka: KafkaConfig,
        topic: str,
        start: RangeBound,
        end: RangeBound,
        batch_size: int,
        poll_s: float = 0.5,
        timeout_s: float = 30.0,
        settle: bool = True,
    ) -> None:
        self.topic, self.batch_size, self.poll_s = topic, batch_size, poll_s
        self.timeout_s = timeout_s
        self.wait_s = kafka.request_timeout_ms / 1000
        self.consumer = assigning_consumer(
            kafka,
            "range",
            **{
                "auto.offset.reset": "earliest",  # a start below the log's (retention): its first
                "enable.partition.eof": True,
            },
        )
        try:
            self.numbers = topic_partitions(self.consumer, topic, self.wait_s)
            if not self.numbers:
                raise TopicError(f"topic {topic!r} does not exist (or is not visible)")
            last = settled(self._ends) if settle else self._ends()
            self.starts = self._offsets(start, last, at_end=False)
            self.ends = self._offsets(end, last, at_end=True)
            self.position = dict(self.starts)
            self.consumer.assign([RdPartition(topic, n, self.starts[n]) for n in self.numbers])
        except BaseException:
            self.consumer.close()
            raise
        self.last_progress = time.monotonic()
        log.info("topic_range_opened", topic=topic, starts=self.starts, ends=self.ends)

    def _ends(self) -> dict[int, int]:
        return {n: end_offset(self.consumer, self.topic, n, self.wait_s) for n in self.numbers}

    def _offsets(self, bound: RangeBound, last: Mapping[int, int], at_end: bool) -> dict[int, int]:
        """Per partition, the offset ``bound`` names (``bound_offsets``)."""

        def by_time(stamp_ms: int) -> dict[int, int | None]:
            asked = [RdPartition(self.topic, n, stamp_ms) for n in self.numbers]
            found = self.consumer.offsets_for_times(asked, timeout=self.wait_s)
            return {p.partition: None if p.offset < 0 else p.offset for p in found}

        return bound_offsets(bound, last, at_end, by_time)

    @property
    def total(self) -> int:
        """Offsets in the range (records, but for transaction markers and aborted records)."""
        return sum(max(self.ends[n] - self.starts[n], 0) for n in self.numbers)

    @property
    def finished(self) -> bool:
        return all(self.position[n] >= self.ends[n] for n in self.numbers)

    def poll(self) -> list[SourceRecord]:
        """Up to ``batch_size`` records of the range; empty once it is read."""
        while not self.finished:
            records = []
            for message in self.consumer.consume(self.batch_size, timeout=self.poll_s):
                error = message.error()
                number = message.partition() or 0
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    reached = message.offset() or 0
                    self.position[number] = max(self.position[number], reached)
                    continue
                if not usable(message):
                    continue
                offset = message.offset() or 0
                self.position[number] = max(self.position[number], offset + 1)
                if offset < self.ends[number]:
                    records.append(record_of(message))
                if self.position[number] >= self.ends[number]:
                    self.consumer.pause([RdPartition(self.topic, number)])
            if self._arrived(records):
                return records
        return []

    def seek(self, offsets: Mapping[Partition, int]) -> None:
        for (topic, number), offset in offsets.items():
            partition = RdPartition(topic, number, offset)
            self.consumer.resume([partition])
            self.consumer.seek(partition)
            self.position[number] = offset

    def close(self) -> None:
        self.consumer.close()
