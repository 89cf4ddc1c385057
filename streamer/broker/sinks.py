"""Kafka sinks: alerts and dead letters produced with ``acks=all``; ``flush`` returns only when
the broker acknowledged every record added since the last flush, and raises otherwise, so the run
loop never commits a batch whose output might be lost. Also the store of calibrator
checkpoints on the compacted ``<group>.state`` topic.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import structlog
from kafka import KafkaProducer
from kafka.partitioner.default import DefaultPartitioner, murmur2

from streamer.alerts import Alert
from streamer.broker.admin import read_to_end
from streamer.broker.transactions import TRANSACTION_TIMEOUT_MS, Transaction, transactional_id
from streamer.checkpoints import SavedState
from streamer.config import KafkaConfig
from streamer.errors import DeliveryError
from streamer.records import DeadLetter, Partition

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


class _ProducerSink:
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


class KafkaStateStore:
    """Checkpoints on the compacted ``<group>.state`` topic.

    A snapshot can exceed Kafka's 1 MB record limit (about 57 KB per entity at a 10,000-score
    window), so it is cut into chunks of at most ``chunk_bytes``, keyed
    ``<group>|<topic>/<partition>|<slot>|<index>``. Generations alternate between slots 0 and 1,
    so compaction never removes the last complete generation while a newer one is half written
    (a crash mid-save); a reader takes the newest generation whose chunks are all present.
    """

    def __init__(
        self,
        producer: KafkaProducer,
        kafka: KafkaConfig,
        transaction: Transaction | None = None,
        chunk_bytes: int = 900_000,
    ) -> None:
        self.kafka, self.chunk_bytes = kafka, chunk_bytes
        self.sink = _ProducerSink(producer, kafka.state_topic, transaction)
        self.prefix = f"{kafka.group_id}|"

    def write(self, partition: Partition, saved: SavedState) -> None:
        data, size = saved.snapshot, self.chunk_bytes
        chunks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
        topic, number = partition
        for index, chunk in enumerate(chunks):
            key = f"{self.prefix}{topic}/{number}|{saved.generation % 2}|{index}"
            headers = [
                ("tandem.generation", str(saved.generation).encode()),
                ("tandem.chunks", str(len(chunks)).encode()),
                ("tandem.offset", str(saved.offset).encode()),
            ]
            self.sink.send(key.encode(), chunk, headers)

    def flush(self) -> None:
        self.sink.flush()

    def read(
        self, partitions: Collection[Partition], timeout_s: float = 30.0
    ) -> dict[Partition, SavedState]:
        wanted = {f"{topic}/{number}": (topic, number) for topic, number in partitions}
        # (partition, slot) -> index -> (generation, chunks, offset, bytes); later records win.
        slots: dict[tuple[Partition, str], dict[int, tuple[int, int, int, bytes]]] = {}
        for record in read_to_end(self.kafka.client_options(), self.kafka.state_topic, timeout_s):
            key, value, headers = record.key, record.value, record.headers or ()
            parts = key.decode(errors="replace").split("|") if key else []
            if len(parts) != 4 or f"{parts[0]}|" != self.prefix or parts[1] not in wanted:
                continue
            try:
                meta = {name: int(raw) for name, raw in headers if name.startswith("tandem.")}
                chunk = (meta["tandem.generation"], meta["tandem.chunks"], meta["tandem.offset"])
                index = int(parts[3])
            except (KeyError, ValueError):
                log.warning("checkpoint_chunk_unreadable", key=parts)
                continue
            slots.setdefault((wanted[parts[1]], parts[2]), {})[index] = (*chunk, value or b"")
        found: dict[Partition, SavedState] = {}
        for (partition, _), chunks in slots.items():
            generation, count, offset, _ = chunks.get(0, (0, 0, 0, b""))
            pieces = [chunks.get(i) for i in range(count)]
            if not count or any(p is None or p[0] != generation for p in pieces):
                continue
            best = found.get(partition)
            if best is None or generation > best.generation:
                data = b"".join(p[3] for p in pieces if p is not None)
                found[partition] = SavedState(data, offset, generation)
        return found
