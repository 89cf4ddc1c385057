"""The Kafka source: a consumer in a group, auto-commit off, batches by count and wait time.

Offsets are committed only by ``commit``, which the run loop calls after the batch's output is
acknowledged and its calibrator state saved.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

import structlog
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import MemberState, OffsetAndMetadata

from streamer.broker.transactions import Transaction
from streamer.client_config import kafka_python_options
from streamer.config import BatchConfig, KafkaConfig
from streamer.errors import TopicError
from streamer.records import Partition, SourceRecord, first_offsets, next_offsets

log = structlog.get_logger(__name__)

COMMIT_TIMEOUT_MS = 5000
"""How long a commit may wait for the group coordinator before ``KafkaTimeoutError`` hands it
back to the run loop, which retries it with backoff and beats in between. kafka-python's own
bound is the request timeout (30 s): in an outage the loop sat that long in one commit, and
``/health/live`` failed at ``[metrics].stall_s = 10``. A commit takes milliseconds when the
coordinator answers; one repeated after a timeout commits the same offsets again."""

JOIN_POLL_MS = 5_000
"""How long a poll may wait while the group is rebalancing (see ``KafkaSource._rebalancing``)."""
STUCK_REBALANCE_S = 120.0


class PartitionListener(Protocol):
    """Told when the group moves partitions (the run loop: ``Runner``)."""

    def partitions_revoked(self, partitions: Collection[Partition]) -> None: ...

    def partitions_assigned(self, partitions: Collection[Partition]) -> None: ...


class CommittedLag:
    """The consumer lag as its users read it: per partition, the records from the first one not
    yet committed to the end, not from the consumer's position.

    The position runs ahead of the commits by every record fetched and not yet through the run
    loop: the fetch process polls batches ahead, so its position sits at the end while a thousand
    records wait uncommitted, and a lag taken from it read 0. Kept from what the source hands
    out and commits, so reading it asks the broker nothing (it is a metric; see ``lag``).
    """

    def __init__(self) -> None:
        self.first_uncommitted: dict[Partition, int] = {}

    def handed_out(self, records: Sequence[SourceRecord]) -> None:
        """``records`` went to the run loop: a partition with nothing committed since it was
        assigned counts from its first record handed out."""
        for partition, offset in first_offsets(records).items():
            self.first_uncommitted.setdefault(partition, offset)

    def committed(self, offsets: Mapping[Partition, int]) -> None:
        """``offsets`` (each the offset after the partition's last committed record) were
        committed; everything from them on is not."""
        self.first_uncommitted.update(offsets)

    def forget(self, partitions: Collection[Partition]) -> None:
        """The group moved ``partitions``: what this source knew of their commits is stale."""
        for partition in partitions:
            self.first_uncommitted.pop(partition, None)

    def lag(self, fetched: Mapping[Partition, tuple[int, int]]) -> dict[Partition, int]:
        """Per partition of ``fetched`` (its end and the consumer's position, as of the last
        fetch), the records from the first uncommitted one to the end; from the position for a
        partition with nothing handed out nor committed yet."""
        return {
            partition: max(end - self.first_uncommitted.get(partition, position), 0)
            for partition, (end, position) in fetched.items()
        }


class KafkaSource:
    """Reads ``[kafka].input_topic`` in consumer group ``[kafka].group_id``.

    Group rebalances happen inside ``poll``. The ``listener`` is told first which partitions are
    being revoked (it saves their state; records fetched for the batch being collected are
    released, uncommitted), then which are assigned (it restores their state).
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        batch: BatchConfig,
        listener: PartitionListener | None = None,
        transaction: Transaction | None = None,
        topic_wait_s: float = 30.0,
    ) -> None:
        self.batch, self.listener, self.transaction = batch, listener, transaction
        self.in_hand: list[Any] = []
        self.committed_lag = CommittedLag()
        self.consumer = KafkaConsumer(
            **kafka_python_options(
                KafkaConsumer,
                kafka.client_options(),
                group_id=kafka.group_id,
                enable_auto_commit=False,
                auto_offset_reset=kafka.auto_offset_reset,
                max_poll_records=batch.max_records,
                metadata_max_age_ms=30_000,
                session_timeout_ms=kafka.session_timeout_ms,
                heartbeat_interval_ms=heartbeat_ms(kafka.session_timeout_ms),
            )
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
        self.topic = kafka.input_topic
        self.unstable_since: float | None = None
        self._subscribe()

    def _subscribe(self) -> None:
        self.consumer.subscribe([self.topic], listener=RebalanceListener(self))
        # A metadata round trip now, before the first poll joins the group: kafka-python takes
        # the topic's partitions for its assignment from the metadata it has when it joins, so
        # a join before any metadata arrived assigns nothing, and the metadata arriving a moment
        # later starts a second rebalance (see ``_rebalancing`` for why that is worth avoiding).
        self.consumer.topics()

    def poll(self) -> list[SourceRecord]:
        """Up to ``max_records`` records, waiting at most ``max_wait_ms`` after the first call."""
        records = [source_record(r) for r in self.poll_fetched()]
        self.committed_lag.handed_out(records)
        return records

    def poll_fetched(self) -> list[Any]:
        """``poll``'s batch as kafka-python's own ``ConsumerRecord`` tuples (for a caller that
        reads a few fields of many records: the fetch process)."""
        deadline = time.monotonic() + self.batch.max_wait_ms / 1000
        while len(self.in_hand) < self.batch.max_records:
            remaining_ms = max(int((deadline - time.monotonic()) * 1000), 0)
            if self._rebalancing():
                remaining_ms = max(remaining_ms, JOIN_POLL_MS)
            fetched = self.consumer.poll(
                timeout_ms=remaining_ms, max_records=self.batch.max_records - len(self.in_hand)
            )
            for partition_records in fetched.values():
                self.in_hand.extend(partition_records)
            if remaining_ms == 0:
                break
        records, self.in_hand = self.in_hand, []
        return records

    def _rebalancing(self) -> bool:
        """Whether the consumer is (re)joining its group; if that has gone on for
        ``STUCK_REBALANCE_S``, subscribe afresh (with a warning), which starts a clean join.

        kafka-python 3.0 can lose an assignment when a ``poll`` times out between the JoinGroup
        and SyncGroup answers of a rebalance that its leader started because topic metadata
        changed (as happens right after a group's first join): its next ``poll`` sees no reason
        to rejoin and never applies the assignment, and every commit fails with
        RebalanceInProgressError. A poll given ``JOIN_POLL_MS`` while the group is not stable
        makes that window all but unreachable; resubscribing gets out of it if it is reached."""
        if self.consumer.group_metadata().state == MemberState.STABLE:
            self.unstable_since = None
            return False
        now = time.monotonic()
        if self.unstable_since is None:
            self.unstable_since = now
        elif now - self.unstable_since > STUCK_REBALANCE_S:
            stuck_s = round(now - self.unstable_since)
            log.warning("rebalance_stuck", seconds=stuck_s, action="subscribe again")
            self.unstable_since = now
            self.consumer.unsubscribe()
            self._subscribe()
        return True

    def lag(self) -> dict[Partition, int]:
        """Records behind the end of each assigned partition, counted from the first not yet
        committed (``CommittedLag``), as of the last fetch."""
        return self.committed_lag.lag(self.fetched_offsets())

    def fetched_offsets(self) -> dict[Partition, tuple[int, int]]:
        """Each assigned partition's end and position as of the last fetch (a partition not
        fetched from yet is left out). For a metric, so it never waits on the broker nor fails
        for it: a position the consumer would have to ask a broker that does not answer for
        (it may, during an outage: kafka-python refreshes positions over the network) leaves the
        partition out this time; before this, the outage's connection error, raised here, killed
        the fetch process and the daemon with it."""
        fetched: dict[Partition, tuple[int, int]] = {}
        for partition in self.consumer.assignment():
            end = self.consumer.highwater(partition)
            if end is None:
                continue
            try:
                position = self.consumer.position(partition, timeout_ms=0)
            except (KafkaError, OSError) as error:
                log.debug("lag_unknown", partition=partition.partition, error=repr(error))
                continue
            if position is not None:
                fetched[(partition.topic, partition.partition)] = (end, position)
        return fetched

    def commit(self, records: Sequence[SourceRecord]) -> None:
        """Commit, per partition, the offset after the last of ``records``; with transactions,
        commit the open transaction with those offsets in it (with none, if ``records`` is
        empty: a checkpoint saved outside a batch)."""
        done = next_offsets(records)
        offsets = kafka_offsets(done)
        if self.transaction is not None:
            self.transaction.commit(offsets, self.consumer.group_metadata())
            self.committed_lag.committed(done)
            return
        if not offsets:
            return
        try:
            self.consumer.commit(offsets, timeout_ms=COMMIT_TIMEOUT_MS)
        except CommitFailedError as error:
            # The group moved these partitions while the batch was out: their new owner reads
            # them again from the last commit (alert ids make the repeats harmless).
            log.warning("commit_refused", error=str(error), partitions=len(offsets))
            return
        self.committed_lag.committed(done)

    def rewind(self, records: Sequence[SourceRecord]) -> None:
        """Seek each partition still owned back to the first of ``records`` in it."""
        self.seek_owned(first_offsets(records))

    def seek(self, offsets: Mapping[Partition, int]) -> None:
        """Serve each partition of ``offsets`` from that offset on (see ``seek_owned``)."""
        self.seek_owned(offsets)

    def seek_owned(self, offsets: Mapping[Partition, int]) -> None:
        """Seek each partition of ``offsets`` still owned to its offset (the others are left to
        their new owner)."""
        owned = self.consumer.assignment()
        for (topic, number), offset in offsets.items():
            partition = TopicPartition(topic, number)
            if partition in owned:
                self.consumer.seek(partition, offset)

    def close(self) -> None:
        self.consumer.close(autocommit=False)


class RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python is untyped
    """The group's rebalances as the source sees them: what was in hand is released (and sought
    back to), then the source's own listener hears of the partitions."""

    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        # kafka-python runs this on its network thread, where blocking consumer calls (a commit)
        # are refused, so records fetched for the batch being collected are not scored here:
        # they are released uncommitted. Their partitions are sought back to the first of them:
        # kafka-python 3 keeps a partition's position when the new assignment gives it back to
        # this consumer, which would otherwise skip them; another owner reads from the last
        # commit. Nothing is lost or scored twice.
        released, self.source.in_hand = self.source.in_hand, []
        if released:
            first: dict[Partition, int] = {}
            for record in released:
                first.setdefault((record.topic, record.partition), record.offset)
            self.source.seek_owned(first)
            log.info("records_released", records=len(released), partitions=len(first))
        self.source.committed_lag.forget(_partitions(revoked))
        if self.source.listener is not None:
            self.source.listener.partitions_revoked(_partitions(revoked))

    def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        self.source.committed_lag.forget(_partitions(assigned))
        if self.source.listener is not None:
            self.source.listener.partitions_assigned(_partitions(assigned))


def heartbeat_ms(session_timeout_ms: int) -> int:
    """How often a member heartbeats: a third of its session timeout, at most 3 s (both
    clients' default), so a session survives two heartbeats lost in a row."""
    return min(3_000, session_timeout_ms // 3)


def source_record(record: Any) -> SourceRecord:
    """A kafka-python ``ConsumerRecord`` as the pipeline's ``SourceRecord``."""
    return SourceRecord(
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.value,
        record.timestamp,
        tuple(record.headers) if record.headers else (),
    )


def kafka_offsets(offsets: Mapping[Partition, int]) -> dict[TopicPartition, OffsetAndMetadata]:
    """``offsets`` as kafka-python's commit (and ``send_offsets_to_transaction``) takes them."""
    return {
        TopicPartition(topic, number): OffsetAndMetadata(offset, "", -1)
        for (topic, number), offset in offsets.items()
    }


def _partitions(partitions: Collection[TopicPartition]) -> list[Partition]:
    return sorted((p.topic, p.partition) for p in partitions)
