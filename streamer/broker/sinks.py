"""Kafka sinks: alerts and dead letters produced with ``acks=all``; ``flush`` returns only when
the broker acknowledged every record added since the last flush, and raises otherwise, so the run
loop never commits a batch whose output might be lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from kafka import KafkaProducer
from kafka.partitioner.default import DefaultPartitioner, murmur2

from streamer.alerts import Alert
from streamer.broker.transactions import TRANSACTION_TIMEOUT_MS, Transaction, transactional_id
from streamer.config import KafkaConfig
from streamer.errors import DeliveryError
from streamer.records import DeadLetter

log = structlog.get_logger(__name__)


class CachingPartitioner(DefaultPartitioner):  # type: ignore[misc]  # kafka-python is untyped
    """kafka-python's default partitioner (murmur2 of the key, as the Java client), with each
    key's hash remembered: the hash is pure Python, about 40 µs a record, and a daemon keys its
    alerts by entity, so it sends the same few thousand keys again and again."""

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        super().__init__()
        self.hashes: dict[bytes, int] = {}

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: bytes | None,
        cluster: Any,
    ) -> int:
        if serialized_key is None:
            return int(super().partition(topic, key, None, value, serialized_value, cluster))
        partitions = cluster.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"Topic {topic} not found in ClusterMetadata")
        hashed = self.hashes.get(serialized_key)
        if hashed is None:
            if len(self.hashes) >= self.MAX_KEYS:
                self.hashes.clear()
            hashed = self.hashes[serialized_key] = murmur2(serialized_key) & 0x7FFFFFFF
        ordered = sorted(partitions)
        return int(ordered[hashed % len(ordered)])


def make_producer(kafka: KafkaConfig) -> KafkaProducer:
    """The producer every sink of a daemon shares; transactional when ``[kafka].transactional``."""
    shared: dict[str, Any] = {
        "acks": "all",
        "linger_ms": 5,
        "partitioner": CachingPartitioner(),
        **kafka.client_options(),
    }
    if kafka.transactional:
        return KafkaProducer(
            transactional_id=transactional_id(kafka),
            transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
            **shared,
        )
    return KafkaProducer(retries=5, **shared)


class ProducerSink:
    def __init__(
        self, producer: KafkaProducer, topic: str, transaction: Transaction | None = None
    ) -> None:
        self.producer, self.topic, self.transaction = producer, topic, transaction
        self.pending: list[Any] = []

    def send(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        if self.transaction is not None:
            self.transaction.ensure_open()
        self.pending.append(self.producer.send(self.topic, key=key, value=value, headers=headers))

    def flush(self) -> None:
        self.producer.flush()
        failed = [future.exception for future in self.pending if not future.succeeded()]
        self.pending = []
        if failed and self.transaction is not None:
            self.transaction.abort()
        if failed:
            raise DeliveryError(
                f"{len(failed)} records to {self.topic} not acknowledged: {failed[0]!r}"
            )


class AlertSink(ProducerSink):
    """Alerts on ``[kafka].alerts_topic``, keyed by entity."""

    def add(self, items: Sequence[Alert]) -> None:
        for alert in items:
            self.send(alert.key.encode(), alert.value())


class DeadLetterSink(ProducerSink):
    """Bad records on ``[kafka].dead_letter_topic``: original key and bytes, reason in headers."""

    def add(self, items: Sequence[DeadLetter]) -> None:
        for letter in items:
            self.send(letter.record.key, letter.record.value, letter.headers())
