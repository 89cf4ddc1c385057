"""Kafka sinks: alerts and dead letters produced with ``acks=all``; ``flush`` returns only when
the broker acknowledged every record added since the last flush, and raises otherwise, so the run
loop never commits a batch whose output might be lost. Also the calibrator checkpoint, written
to the compacted ``<group>.state`` topic and read back at start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streamer.alerts import Alert
from streamer.config import KafkaConfig
from streamer.errors import TandemError
from streamer.records import DeadLetter, SourceRecord

log = structlog.get_logger(__name__)


class DeliveryError(TandemError):
    """The broker did not acknowledge records; nothing of their batch may be committed."""

    retriable = True


def make_producer(kafka: KafkaConfig) -> KafkaProducer:
    return KafkaProducer(acks="all", linger_ms=5, retries=5, **kafka.client_options())


class _ProducerSink:
    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        self.producer, self.topic = producer, topic
        self.pending: list[Any] = []

    def send(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        self.pending.append(self.producer.send(self.topic, key=key, value=value, headers=headers))

    def flush(self) -> None:
        self.producer.flush()
        failed = [future.exception for future in self.pending if not future.succeeded()]
        self.pending = []
        if failed:
            raise DeliveryError(
                f"{len(failed)} records to {self.topic} not acknowledged: {failed[0]!r}"
            )


class AlertSink(_ProducerSink):
    """Alerts on ``[kafka].alerts_topic``, keyed by entity."""

    def add(self, items: Sequence[Alert]) -> None:
        for alert in items:
            self.send(alert.key.encode(), alert.value())


class DeadLetterSink(_ProducerSink):
    """Bad records on ``[kafka].dead_letter_topic``: original key and bytes, reason in headers."""

    def add(self, items: Sequence[DeadLetter]) -> None:
        for letter in items:
            self.send(letter.record.key, letter.record.value, letter.headers())


class KafkaCheckpoint:
    """The calibrator state as one record keyed by group on the compacted state topic."""

    def __init__(self, producer: KafkaProducer, kafka: KafkaConfig) -> None:
        self.sink = _ProducerSink(producer, kafka.state_topic)
        self.key = kafka.group_id.encode()

    def save(self, state: bytes, records: Sequence[SourceRecord]) -> None:
        """Write ``state`` with a header naming, per partition, the last position it reflects."""
        last: dict[tuple[str, int], int] = {}
        for record in records:
            where = (record.topic, record.partition)
            last[where] = max(last.get(where, -1), record.offset)
        positions = ",".join(
            f"{topic}/{partition}/{offset}" for (topic, partition), offset in sorted(last.items())
        )
        self.sink.send(self.key, state, [("tandem.positions", positions.encode())])
        self.sink.flush()


def load_checkpoint(kafka: KafkaConfig, timeout_s: float = 10.0) -> bytes | None:
    """The latest calibrator state saved for this group, or None if there is none."""
    consumer = KafkaConsumer(enable_auto_commit=False, **kafka.client_options())
    try:
        partitions = [
            TopicPartition(kafka.state_topic, p)
            for p in consumer.partitions_for_topic(kafka.state_topic) or ()
        ]
        if not partitions:
            return None
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        latest: bytes | None = None
        while any(consumer.position(p) < ends[p] for p in partitions):
            for records in consumer.poll(timeout_ms=int(timeout_s * 1000)).values():
                for record in records:
                    if record.key == kafka.group_id.encode():
                        latest = record.value
        return latest
    finally:
        consumer.close()
