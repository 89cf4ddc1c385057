"""Resuming a partition from its checkpoint, so that a crash costs no learning.

A checkpoint reflects a partition's records before its offset X; the group's commit, C, may be
later (checkpoints are saved every ``checkpoint_interval_s``, commits after every batch) or,
after a crash between a save and its commit, earlier. The records between were learned by the
crashed daemon and delivered by it, but their learning is not in the checkpoint. So when a
partition restored from a checkpoint first comes in, from C:

- X < C: the partition is sought back to X and its records up to C are **replayed**: scored,
  calibrated and judged again, in order, so its keys learn exactly what they had learned, but
  their alerts and dead letters are not produced again (they were delivered before C was
  committed) and their offsets are not committed again.
- X > C: its records before X are **skipped**: not learned twice, committed with the batch.

C is the first offset fetched for the partition after its assignment (the committed offset, or
the first record after it: a transactional topic's control records hold no data), so finding it
costs no broker call. Reasoning: docs/delivery.md.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from streamer.records import Partition, SourceRecord

log = structlog.get_logger(__name__)


@dataclass
class Plan:
    """What to do with a batch: ``process`` its records (in order), ``seek`` these partitions
    back (their records in this batch are left out: they come again), and count ``skipped``
    records as done without learning them."""

    process: list[SourceRecord]
    seek: dict[Partition, int] = field(default_factory=dict)
    skipped: list[SourceRecord] = field(default_factory=list)


class Resumption:
    """Where each restored partition resumes (see the module docstring)."""

    def __init__(self) -> None:
        self._restored: dict[Partition, int] = {}
        """Restored from a checkpoint at this offset, nothing of it fetched since."""
        self._replaying: dict[Partition, int] = {}
        """Replaying: records below this offset were delivered before."""
        self._skipping: dict[Partition, int] = {}
        """Records below this offset are already learned."""

    def restored(self, partition: Partition, offset: int) -> None:
        """``partition`` was just assigned and restored from a checkpoint reflecting its
        records before ``offset``."""
        self._restored[partition] = offset
        self._replaying.pop(partition, None)
        self._skipping.pop(partition, None)

    def forget(self, partitions: Collection[Partition]) -> None:
        """``partitions`` were revoked: whoever owns them next resumes them."""
        for partition in partitions:
            self._restored.pop(partition, None)
            self._replaying.pop(partition, None)
            self._skipping.pop(partition, None)

    @property
    def idle(self) -> bool:
        """Whether no batch needs a plan (nothing restored, replaying or skipping)."""
        return not (self._restored or self._replaying or self._skipping)

    def plan(self, records: Sequence[SourceRecord]) -> Plan:
        """How to run a batch of ``records`` (in stream order)."""
        if self.idle:
            return Plan(list(records))
        seek: dict[Partition, int] = {}
        for record in records:
            partition = (record.topic, record.partition)
            checkpoint = self._restored.pop(partition, None)
            if checkpoint is None:
                continue
            if checkpoint < record.offset:
                seek[partition] = checkpoint
                self._replaying[partition] = record.offset
            elif checkpoint > record.offset:
                self._skipping[partition] = checkpoint
            log.info(
                "partition_resumed",
                topic=partition[0],
                partition=partition[1],
                checkpoint=checkpoint,
                committed=record.offset,
                replay=max(record.offset - checkpoint, 0),
                skip=max(checkpoint - record.offset, 0),
            )
        plan = Plan([], seek)
        for record in records:
            partition = (record.topic, record.partition)
            if partition in seek:
                continue
            below = self._skipping.get(partition)
            if below is not None and record.offset < below:
                plan.skipped.append(record)
                continue
            if below is not None:
                del self._skipping[partition]
            plan.process.append(record)
        return plan

    def replayed(self, topic: str, partition: int, offset: int) -> bool:
        """Whether the record at ``offset`` is replayed (its output was delivered before)."""
        until = self._replaying.get((topic, partition))
        return until is not None and offset < until

    def to_commit(self, records: Sequence[SourceRecord]) -> list[SourceRecord]:
        """``records`` less those replayed (their offsets are committed already: committing
        them again would move the group's position back); a partition whose replay reached
        its end is done replaying."""
        if not self._replaying:
            return list(records)
        kept = []
        for record in records:
            partition = (record.topic, record.partition)
            until = self._replaying.get(partition)
            if until is None:
                kept.append(record)
            elif record.offset >= until:
                del self._replaying[partition]
                kept.append(record)
        return kept

    def replaying(self) -> Mapping[Partition, int]:
        """The partitions being replayed, and the offset each replays up to."""
        return dict(self._replaying)
