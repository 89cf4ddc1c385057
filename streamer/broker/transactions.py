"""Exactly-once delivery (``[kafka].transactional``): a batch's alerts, dead letters, checkpoint
chunks and input offsets are written in one Kafka transaction, so a subscriber reading with
``isolation_level=read_committed`` sees each alert exactly once, even across crashes.

Each daemon process gets its own ``transactional.id``; fencing of a stale instance comes from the
consumer group's generation (KIP-447: the offsets are sent with the consumer's group metadata).
A transaction left open by a crashed process is aborted by the broker after
``TRANSACTION_TIMEOUT_MS``; until then read-committed subscribers wait at that point.

The producer is kafka-python's ``KafkaProducer`` or ``streamer.broker.librdkafka.RdkafkaProducer``
(the same calls). Their calls that end a transaction wait for the broker with no time limit; they go
through the daemon's ``DeliveryWait`` (``call``), so in an outage the loop still beats and says
why it waits, and a stop gives up after its bound (the transaction is then aborted by the broker,
and its batch read again by the next owner).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from streamer.broker.waits import DeliveryWait
from streamer.config import KafkaConfig

log = structlog.get_logger(__name__)

TRANSACTION_TIMEOUT_MS = 30_000


def transactional_id(kafka: KafkaConfig) -> str:
    """A fresh id per process: ``<group_id>.<client_id>.<8 hex digits>``."""
    return f"{kafka.group_id}.{kafka.client_id}.{uuid.uuid4().hex[:8]}"


class Transaction:
    """The producer's transaction in progress: opened by the first record of a batch, committed
    with the batch's offsets, aborted when anything in it fails (the batch is then delivered
    again in a new one)."""

    def __init__(self, producer: Any, wait: DeliveryWait | None = None) -> None:
        self.producer = producer
        self.wait = wait or DeliveryWait()
        self.open = False
        producer.init_transactions()

    def ensure_open(self) -> None:
        if not self.open:
            self.producer.begin_transaction()
            self.open = True

    def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata], group: Any) -> None:
        """Commit what was produced together with ``offsets`` of the consumer ``group``
        (its ``group_metadata()``); with no offsets, commit what is open, if anything."""
        if not offsets and not self.open:
            return
        self.ensure_open()
        try:
            if offsets:
                self.wait.call(
                    "send_offsets_to_transaction",
                    lambda: self.producer.send_offsets_to_transaction(dict(offsets), group),
                )
            self.wait.call("commit_transaction", self.producer.commit_transaction)
        except Exception:
            self.abort()
            raise
        self.open = False

    def abort(self) -> None:
        """Abort the open transaction (nothing in it becomes visible to read-committed readers)."""
        if not self.open:
            return
        self.open = False
        try:
            self.wait.call("abort_transaction", self.producer.abort_transaction)
        except Exception as error:  # the producer may be unusable; the next begin will say so
            log.warning("transaction_abort_failed", error=repr(error))
