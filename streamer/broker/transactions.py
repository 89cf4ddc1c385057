"""Exactly-once delivery (``[kafka].transactional``): a batch's alerts, dead letters, checkpoint
chunks and input offsets are written in one Kafka transaction, so a subscriber reading with
``isolation_level=read_committed`` sees each alert exactly once, even across crashes.

Each daemon process gets its own ``transactional.id``; fencing of a stale instance comes from the
consumer group's generation (KIP-447: the offsets are sent with the consumer's group metadata).
A transaction left open by a crashed process is aborted by the broker after
``TRANSACTION_TIMEOUT_MS``; until then read-committed subscribers wait at that point.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import structlog
from kafka import KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

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

    def __init__(self, producer: KafkaProducer) -> None:
        self.producer = producer
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
                self.producer.send_offsets_to_transaction(dict(offsets), group)
            self.producer.commit_transaction()
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
            self.producer.abort_transaction()
        except Exception as error:  # the producer may be unusable; the next begin will say so
            log.warning("transaction_abort_failed", error=repr(error))
