"""The Kafka source: a consumer in a group, auto-commit off, batches by count and wait time.

Offsets are committed only by ``commit``, which the run loop calls after the batch's output is
acknowledged and its calibrator state saved.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from streamer.config import BatchConfig, KafkaConfig
from streamer.errors import TopicError
from streamer.records import SourceRecord


class KafkaSource:
    """Reads ``[kafka].input_topic`` in consumer group ``[kafka].group_id``."""

    def __init__(self, kafka: KafkaConfig, batch: BatchConfig, topic_wait_s: float = 30.0) -> None:
        self.batch = batch
        self.consumer = KafkaConsumer(
            group_id=kafka.group_id,
            enable_auto_commit=False,
            auto_offset_reset=kafka.auto_offset_reset,
            max_poll_records=batch.max_records,
            metadata_max_age_ms=30_000,
            **kafka.client_options(),
        )
        # Join the group only once the topic's partitions are known: a member that joins first
        # can be handed nothing and wait for the next metadata refresh to rejoin.
        deadline = time.monotonic() + topic_wait_s
        while not self.consumer.partitions_for_topic(kafka.input_topic):
            if time.monotonic() > deadline:
                self.consumer.close()
                raise TopicError(
                    f"input topic {kafka.input_topic!r} does not exist (or is not visible)"
                )
            time.sleep(0.2)
        self.consumer.subscribe([kafka.input_topic])

    def poll(self) -> list[SourceRecord]:
        """Up to ``max_records`` records, waiting at most ``max_wait_ms`` after the first call."""
        records: list[SourceRecord] = []
        deadline = time.monotonic() + self.batch.max_wait_ms / 1000
        while len(records) < self.batch.max_records:
            remaining_ms = max(int((deadline - time.monotonic()) * 1000), 0)
            fetched = self.consumer.poll(
                timeout_ms=remaining_ms, max_records=self.batch.max_records - len(records)
            )
            for partition_records in fetched.values():
                records.extend(
                    SourceRecord(
                        r.topic,
                        r.partition,
                        r.offset,
                        r.key,
                        r.value,
                        r.timestamp,
                        tuple(r.headers or ()),
                    )
                    for r in partition_records
                )
            if remaining_ms == 0:
                break
        return records

    def commit(self, records: Sequence[SourceRecord]) -> None:
        """Commit, per partition, the offset after the last of ``records``."""
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for record in records:
            partition = TopicPartition(record.topic, record.partition)
            current = offsets.get(partition)
            if current is None or record.offset + 1 > current.offset:
                offsets[partition] = OffsetAndMetadata(record.offset + 1, "", -1)
        if offsets:
            self.consumer.commit(offsets)

    def close(self) -> None:
        self.consumer.close(autocommit=False)
