"""Kafka sinks: alerts and dead letters produced with ``acks=all``; ``flush`` returns only when
the broker acknowledged every record added since the last flush, and raises otherwise, so the run
loop never commits a batch whose output might be lost. A flush waits in slices
(``streamer.broker.waits``), so a daemon waiting on an absent broker is seen to wait, not to hang.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from kafka import KafkaProducer
from kafka.partitioner.default import DefaultPartitioner, murmur2

from streamer.alerts import Alert
from streamer.broker.transactions import TRANSACTION_TIMEOUT_MS, Transaction, transactional_id
from streamer.broker.waits import DeliveryWait
from streamer.client_config import kafka_python_options
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
    own: dict[str, Any] = {"acks": "all", "linger_ms": 5, "partitioner": CachingPartitioner()}
    if kafka.transactional:
        own |= {
            "transactional_id": transactional_id(kafka),
            "transaction_timeout_ms": TRANSACTION_TIMEOUT_MS,
        }
    else:
        own["retries"] = 5
    return KafkaProducer(**kafka_python_options(KafkaProducer, kafka.client_options(), **own))


class ProducerSink:
    def __init__(
        self,
        producer: KafkaProducer,
        topic: str,
        transaction: Transaction | None = None,
        wait: DeliveryWait | None = None,
    ) -> None:
        self.producer, self.topic, self.transaction = producer, topic, transaction
        self.wait = wait or DeliveryWait()
        self.pending: list[Any] = []

    def send(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        if self.transaction is not None:
            self.transaction.ensure_open()
        self.pending.append(self.producer.send(self.topic, key=key, value=value, headers=headers))

    def flush(self) -> None:
        try:
            self.wait.flush(self.producer)
        except DeliveryError:
            self.pending = []  # given up (closing): not to be told of again
            raise
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
    """Bad records on ``[kafka].dead_letter_topic``: original key and bytes, reason in headers,
    cut to fit the producer's ``max_request_size`` (``fit_dead_letter``)."""

    def add(self, items: Sequence[DeadLetter]) -> None:
        limit = int(self.producer.config.get("max_request_size", DEFAULT_MAX_REQUEST_SIZE))
        for letter in items:
            self.send(*fit_dead_letter(letter, limit))


DEFAULT_MAX_REQUEST_SIZE = 1_048_576
"""kafka-python's ``max_request_size``: the largest record its producer sends."""

FRAMING_BYTES = 4096
"""Room left under that limit for the record's and its batch's framing (tens of bytes) with a
wide margin."""

REASON_BYTES = 4096
"""The most of a reason an oversized dead letter keeps (a reason may quote a huge key)."""

Fitted = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]
"""A dead letter's key, value and headers as sent."""


def fit_dead_letter(letter: DeadLetter, limit: int) -> Fitted:
    """The key, value and headers of ``letter``, cut so that they fit a producer limit of
    ``limit`` bytes: the value first, then (a key of 10s of KB) the original headers and the
    key, never tandem's reason headers. A record the broker took may be too large to send back
    with those headers added: sent whole, it failed on every retry and halted the pipeline. What
    was cut is named in a ``tandem.truncated`` header (``value=<original bytes>`` ...)."""
    key, value = letter.record.key or b"", letter.record.value or b""
    ours = [
        (name, text[:REASON_BYTES] if name == "tandem.error" else text)
        for name, text in letter.headers()[len(letter.record.headers) :]
    ]
    original = list(letter.record.headers)
    room = limit - FRAMING_BYTES - _header_bytes(ours) - 64  # 64: the truncated header itself
    if len(key) + len(value) + _header_bytes(original) <= room + 64:
        return letter.record.key, letter.record.value, letter.headers()
    cuts = [f"value={len(value)}"]
    value = value[: max(room - len(key) - _header_bytes(original), 0)]
    if len(key) + _header_bytes(original) > room:
        cuts += [f"headers={len(original)}", f"key={len(key)}"]
        original, key = [], key[: max(room, 0)]
    truncated = ("tandem.truncated", ",".join(cuts).encode())
    return key or None, value, [*original, *ours, truncated]


def _header_bytes(headers: Sequence[tuple[str, bytes]]) -> int:
    return sum(len(name.encode()) + len(value) + 8 for name, value in headers)
