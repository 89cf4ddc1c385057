"""The librdkafka client (``[kafka].client = "librdkafka"``; confluent-kafka, the extra
``tandem-detect[librdkafka]``) behind the same source and producer as kafka-python's.

- ``RdkafkaSource``: a consumer in the group with the cooperative-sticky assignor, auto-commit
  off; batches are one ``consume`` call (up to ``max_records``, waiting up to ``max_wait_ms``).
  Rebalance callbacks run inside ``consume``, on the daemon's own thread, so a revoked
  partition's state is saved before it moves, and only the partitions that move are revoked.
  librdkafka fetches and parses in its own C threads, so no fetch process is needed.
- ``RdkafkaProducer``: an idempotent producer (``acks=all``) with the interface the sinks use
  (``send`` returning a delivery handle, ``flush(timeout)`` raising ``KafkaTimeoutError`` when
  not everything was acknowledged in time), partitioning keys as the Java client does; with a
  ``transactional.id``, kafka-python's transaction calls (exactly-once,
  ``streamer.broker.transactions``).

Topic ranges and checkpoints are read by ``streamer.broker.rdkafka_range``, topics administered
by ``streamer.broker.rdkafka_admin``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka import TopicPartition as RdPartition
from kafka.errors import KafkaTimeoutError

from streamer.broker.sources import CommittedLag, PartitionListener, heartbeat_ms, kafka_offsets
from streamer.broker.transactions import TRANSACTION_TIMEOUT_MS, Transaction
from streamer.config import BatchConfig, KafkaConfig
from streamer.errors import TopicError
from streamer.records import Partition, SourceRecord, first_offsets, next_offsets

log = structlog.get_logger(__name__)

MAX_MESSAGE_BYTES = 1_000_000
"""librdkafka's ``message.max.bytes``: the largest record its producer sends."""

RECHECK_S = 5.0
"""How often an idle source compares the group's committed offsets with its own last commits."""
COMMITTED_TIMEOUT_S = 2.0
"""The longest an idle source waits for the group's committed offsets (it then tries later)."""
COMMIT_MOVED = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._ASSIGNMENT_LOST,  # librdkafka's own code, public in its API
}
"""Commit errors meaning the group moved the partitions meanwhile: their new owner reads the
records again from the last commit (alert ids make the repeats harmless)."""


def rdkafka_options(kafka: KafkaConfig) -> dict[str, Any]:
    """``[kafka]``'s servers, identity and security as librdkafka properties (the kafka-python
    names of ``KafkaConfig.client_options`` translated), then ``[kafka.client_config]``, with
    librdkafka's logs and errors sent to the daemon's log."""
    options: dict[str, Any] = {
        "bootstrap.servers": ",".join(kafka.bootstrap_servers),
        "client.id": kafka.client_id,
        "security.protocol": kafka.security_protocol,
        "socket.timeout.ms": kafka.request_timeout_ms,
        "reconnect.backoff.max.ms": 2000,
        "logger": logging.getLogger("librdkafka"),
        "error_cb": log_error,
    }
    given = kafka.client_options()
    names = {
        "sasl_mechanism": "sasl.mechanism",
        "sasl_plain_username": "sasl.username",
        "sasl_plain_password": "sasl.password",
        "ssl_cafile": "ssl.ca.location",
        "ssl_certfile": "ssl.certificate.location",
        "ssl_keyfile": "ssl.key.location",
        "ssl_password": "ssl.key.password",
    }
    options.update({names[key]: given[key] for key in names if key in given})
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl.endpoint.identification.algorithm"] = (
            "https" if kafka.ssl_check_hostname else "none"
        )
    if kafka.client == "librdkafka":  # [kafka.client_config], in librdkafka's names
        options.update(kafka.client_config)
    return options


def log_error(error: KafkaError) -> None:
    """librdkafka's client-level errors (brokers down, authentication refused) as log events;
    it retries by itself, so they are warnings unless fatal."""
    emit = log.error if error.fatal() else log.warning
    emit("librdkafka_error", code=error.name(), error=error.str())


def topic_partitions(client: Any, topic: str, timeout_s: float) -> list[int]:
    """``topic``'s partition numbers, sorted, from one metadata request for that topic only
    (``client``: any librdkafka client; none creates a topic by asking); empty while it does not
    exist. ``KafkaException`` when the broker does not answer."""
    metadata = client.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return []
    return sorted(metadata.partitions)


def end_offset(consumer: Consumer, topic: str, number: int, timeout_s: float) -> int:
    """The end offset of partition ``number`` of ``topic`` now, asked of the broker."""
    _, high = consumer.get_watermark_offsets(
        RdPartition(topic, number), timeout=timeout_s, cached=False
    )
    return int(high)


def assigning_consumer(kafka: KafkaConfig, role: str, **more: Any) -> Consumer:
    """A consumer that reads partitions it assigns itself, committed records only, and never
    commits: librdkafka needs a ``group.id`` even so (``<group_id>.<role>``), which it never
    joins. ``more``: further librdkafka properties."""
    return Consumer(
        {
            **rdkafka_options(kafka),
            "group.id": f"{kafka.group_id}.{role}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            **more,
        }
    )


class RdkafkaSource:
    """Reads ``[kafka].input_topic`` in group ``[kafka].group_id`` (see the module docstring);
    the ``listener`` hears which partitions are revoked, lost or assigned."""

    def __init__(
        self,
        kafka: KafkaConfig,
        batch: BatchConfig,
        listener: PartitionListener | None = None,
        topic_wait_s: float = 30.0,
        transaction: Transaction | None = None,
    ) -> None:
        self.batch, self.listener, self.topic = batch, listener, kafka.input_topic
        self.transaction = transaction
        self.committed_lag = CommittedLag()
        self.sent: dict[Partition, int] = {}
        """The last offset committed per owned partition (asynchronously: not known to be in
        the group's offsets until ``_recheck_commits`` saw it there)."""
        self.unchecked = False
        """Whether a commit was sent since the group last held every one of ``sent``."""
        self.checked_at = 0.0
        self.consumer = Consumer(
            {
                **rdkafka_options(kafka),
                "group.id": kafka.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": kafka.auto_offset_reset,
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": kafka.session_timeout_ms,
                "heartbeat.interval.ms": heartbeat_ms(kafka.session_timeout_ms),
                "on_commit": self._commit_answered,
            }
        )
        deadline = time.monotonic() + topic_wait_s
        while not self._topic_known():
            if time.monotonic() > deadline:
                self.consumer.close()
                raise TopicError(f"input topic {self.topic!r} does not exist (or is not visible)")
            time.sleep(0.2)
        self.consumer.subscribe(
            [self.topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )

    def _topic_known(self) -> bool:
        try:
            return bool(topic_partitions(self.consumer, self.topic, timeout_s=5.0))
        except KafkaException:
            return False

    def poll(self) -> list[SourceRecord]:
        """Up to ``max_records`` records, waiting at most ``max_wait_ms``."""
        messages = self.consumer.consume(
            num_messages=self.batch.max_records, timeout=self.batch.max_wait_ms / 1000
        )
        records = [record_of(message) for message in messages if usable(message)]
        self.committed_lag.handed_out(records)
        if not records:
            self._recheck_commits()
        return records

    def commit(self, records: Sequence[SourceRecord]) -> None:
        """Commit, per partition, the offset after the last of ``records``, without waiting
        for the broker's answer: librdkafka's synchronous commit has no time limit, and waited
        out a broker outage with the run loop silent (``/health/live`` failed). The batch's
        output is acknowledged before this is called, so a commit that does not land only makes
        the next owner read the batch again (at-least-once; its checkpoint, saved with the
        batch, keeps it from being learned twice); ``_commit_answered`` logs one that failed.

        With transactions, the offsets go into the open transaction, committed with it (with
        none, if ``records`` is empty: a checkpoint saved outside a batch), as on kafka-python.
        """
        done = next_offsets(records)
        if self.transaction is not None:
            group = self.consumer.consumer_group_metadata()
            self.transaction.commit(kafka_offsets(done), group)
            self.committed_lag.committed(done)
            return
        if not done:
            return
        self._send_commit(done)
        self.committed_lag.committed(done)

    def _send_commit(self, done: Mapping[Partition, int]) -> None:
        offsets = [RdPartition(topic, number, offset) for (topic, number), offset in done.items()]
        self.consumer.commit(offsets=offsets, asynchronous=True)
        self.sent.update(done)
        self.unchecked = True

    def _recheck_commits(self) -> None:
        """While idle, every ``RECHECK_S``: ask the group for its committed offsets and commit
        again each partition's last offset that is not there. Asynchronous commits sent around
        a broker outage were sometimes lost although librdkafka answered some of them as done:
        the daemon then sat idle with its last batches uncommitted (lag that never cleared, and
        a re-read on the next restart). Checking the group itself does not depend on which
        answers can be trusted. A partition revoked or lost is dropped (``_revoked``); one the
        group has moved meanwhile is refused by the broker (``commit_refused``)."""
        if not self.unchecked or time.monotonic() - self.checked_at < RECHECK_S:
            return  # nothing sent since the group held it all: no request while idle
        self.checked_at = time.monotonic()
        asked = [RdPartition(topic, number) for topic, number in self.sent]
        try:
            answer = self.consumer.committed(asked, timeout=COMMITTED_TIMEOUT_S)
        except KafkaException as error:  # the broker or coordinator is away: try again later
            log.debug("committed_unknown", error=str(error))
            return
        group = {(p.topic, p.partition): p.offset for p in answer if p.error is None}
        behind = {key: offset for key, offset in self.sent.items() if group.get(key, -1) < offset}
        self.unchecked = False
        if behind:
            log.info("commit_resent", partitions=len(behind))
            self._send_commit(behind)

    def _commit_answered(self, error: KafkaError | None, partitions: list[RdPartition]) -> None:
        """The broker's answer to a commit (served inside ``consume``): a failure is logged
        (``commit_refused`` when the group moved the partitions: their new owner reads the
        records again); whether the offsets landed is checked with the group itself
        (``_recheck_commits``)."""
        if error is None or error.code() == KafkaError._NO_OFFSET:
            return
        moved = error.code() in COMMIT_MOVED
        log.warning(
            "commit_refused" if moved else "commit_failed",
            error=error.str(),
            partitions=len(partitions),
        )

    def lag(self) -> dict[Partition, int]:
        """Records behind the end of each assigned partition, counted from the first not yet
        committed, from what the client last fetched (it asks the broker nothing)."""
        fetched: dict[Partition, tuple[int, int]] = {}
        assigned = self.consumer.assignment()
        positions = {(p.topic, p.partition): p.offset for p in self.consumer.position(assigned)}
        for partition in assigned:
            key = (partition.topic, partition.partition)
            try:
                _, end = self.consumer.get_watermark_offsets(partition, cached=True)
            except KafkaException:
                continue
            if end >= 0 and positions.get(key, -1) >= 0:
                fetched[key] = (end, positions[key])
        return self.committed_lag.lag(fetched)

    def rewind(self, records: Sequence[SourceRecord]) -> None:
        """Seek each partition still owned back to the first of ``records`` in it."""
        self.seek(first_offsets(records))

    def seek(self, offsets: Mapping[Partition, int]) -> None:
        """Serve each partition of ``offsets`` still owned from that offset on."""
        owned = {(p.topic, p.partition) for p in self.consumer.assignment()}
        for (topic, number), offset in offsets.items():
            if (topic, number) in owned:
                self.consumer.seek(RdPartition(topic, number, offset))

    def close(self) -> None:
        self.consumer.close()

    def _assigned(self, consumer: Consumer, partitions: list[RdPartition]) -> None:
        moved = _partitions(partitions)
        self.committed_lag.forget(moved)
        if self.listener is not None and moved:
            self.listener.partitions_assigned(moved)

    def _revoked(self, consumer: Consumer, partitions: list[RdPartition]) -> None:
        moved = _partitions(partitions)
        self.committed_lag.forget(moved)
        for partition in moved:
            self.sent.pop(partition, None)
        if self.listener is not None and moved:
            self.listener.partitions_revoked(moved)

    def _lost(self, consumer: Consumer, partitions: list[RdPartition]) -> None:
        """Partitions taken away without a revocation (the session expired): their state is
        saved as on a revocation; commits for them will be refused."""
        log.warning("partitions_lost", partitions=len(partitions))
        self._revoked(consumer, partitions)


def usable(message: Message) -> bool:
    """Whether ``message`` is a record; an error event is logged (raised when fatal)."""
    error = message.error()
    if error is None:
        return True
    if error.fatal():
        raise KafkaException(error)
    log.warning("consume_error", code=error.name(), error=error.str())
    return False


def record_of(message: Message) -> SourceRecord:
    """A librdkafka ``Message`` (a record, not an error event) as the pipeline's
    ``SourceRecord``; its headers' values are bytes, as a consumer receives them."""
    headers: Any = message.headers() or ()
    return SourceRecord(
        message.topic() or "",
        message.partition() or 0,
        message.offset() or 0,
        message.key(),
        message.value(),
        message.timestamp()[1],
        tuple(headers),
    )


def _partitions(partitions: Collection[RdPartition]) -> list[Partition]:
    return sorted((p.topic, p.partition) for p in partitions)


class Delivery:
    """One record's delivery report, as the sinks and ``tandem replay`` read a kafka-python
    future: ``succeeded()``, ``failed()``, ``exception``, and ``value.partition`` once
    acknowledged."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done: bool = False
        self.error: KafkaError | None = None
        self.value: Acknowledged | None = None

    def __call__(self, error: KafkaError | None, message: Message) -> None:
        self.done, self.error = True, error
        if error is None:
            self.value = Acknowledged(int(message.partition() or 0), int(message.offset() or 0))

    def succeeded(self) -> bool:
        return self.done and self.error is None

    def failed(self) -> bool:
        return not self.succeeded()

    @property
    def exception(self) -> object:
        return self.error if self.done else "no delivery report"


@dataclass(frozen=True)
class Acknowledged:
    """Where an acknowledged record landed (kafka-python's ``RecordMetadata``, the part read)."""

    partition: int
    offset: int


class RdkafkaProducer:
    """An idempotent ``acks=all`` producer with the part of kafka-python's ``KafkaProducer``
    the sinks use (see the module docstring)."""

    config: Mapping[str, int] = {"max_request_size": MAX_MESSAGE_BYTES}

    def __init__(self, kafka: KafkaConfig, transactional_id: str | None = None) -> None:
        transactional = (
            {"transactional.id": transactional_id, "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS}
            if transactional_id
            else {}
        )
        self.producer = Producer(
            {
                **rdkafka_options(kafka),
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "partitioner": "murmur2_random",  # the Java client's, as kafka-python's
                "message.max.bytes": MAX_MESSAGE_BYTES,
                **transactional,
            }
        )

    # Transactions, with kafka-python's calls (``streamer.broker.transactions.Transaction``).

    def init_transactions(self) -> None:
        self.producer.init_transactions()

    def begin_transaction(self) -> None:
        self.producer.begin_transaction()

    def send_offsets_to_transaction(
        self, offsets: Mapping[Any, Any], group_metadata: object
    ) -> None:
        """``offsets``: kafka-python's ``TopicPartition`` → ``OffsetAndMetadata``;
        ``group_metadata``: the source consumer's ``consumer_group_metadata()``."""
        positions = [
            RdPartition(tp.topic, tp.partition, meta.offset) for tp, meta in offsets.items()
        ]
        self.producer.send_offsets_to_transaction(positions, group_metadata)

    def commit_transaction(self) -> None:
        self.producer.commit_transaction()

    def abort_transaction(self) -> None:
        self.producer.abort_transaction()

    def send(
        self,
        topic: str,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp_ms: int | None = None,
    ) -> Delivery:
        delivery = Delivery()
        while True:
            try:
                self.producer.produce(
                    topic,
                    value,
                    key,
                    headers=headers,  # type: ignore[arg-type]  # bytes values are allowed
                    on_delivery=delivery,
                    timestamp=timestamp_ms or 0,  # 0: the producer's clock, as kafka-python's None
                )
                break
            except BufferError:  # the local queue is full: serve delivery reports, then again
                self.producer.poll(0.1)
        self.producer.poll(0)
        return delivery

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every record sent to be acknowledged or failed; ``KafkaTimeoutError`` if
        some are still out after ``timeout`` seconds."""
        left = self.producer.flush(-1 if timeout is None else timeout)
        if left:
            raise KafkaTimeoutError(f"{left} records not acknowledged in {timeout} s")

    def close(self, timeout: float | None = None) -> None:
        """Flush what can be flushed in ``timeout`` seconds (librdkafka closes on release)."""
        self.producer.flush(10.0 if timeout is None else timeout)
