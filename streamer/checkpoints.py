"""Calibrator checkpoints, one per input partition, so thresholds move with their partition.

An entity's windows all arrive on one partition, so a partition's checkpoint is the calibrator
state of the entities it carried plus the offset after the last record it reflects; it is
restored when the partition is assigned. Saved after every batch when ``interval_s`` is 0, else
at most every ``interval_s`` seconds, and always for partitions being revoked and at a graceful
stop. Alerts and offsets never depend on checkpoints: a crash costs at most an interval's
learning.

Reasoning: docs/delivery.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from calibration.base import Calibrator
from calibration.state import GLOBAL, entity_names
from streamer.records import Partition, SourceRecord, WindowBatch, next_offsets

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SavedState:
    """One partition's checkpoint: calibrator ``snapshot`` bytes, the ``offset`` of the next
    record it does not reflect, and its ``generation`` (1 for the first save, then +1 per save)."""

    snapshot: bytes
    offset: int
    generation: int


class StateStore(Protocol):
    """Where checkpoints are kept: the compacted state topic, or memory in tests."""

    def write(self, partition: Partition, saved: SavedState) -> None: ...

    def flush(self) -> None:
        """Return once every write is durable; raise if one is not."""
        ...

    def read(self, partitions: Collection[Partition]) -> dict[Partition, SavedState]:
        """The latest complete checkpoint of each of ``partitions`` that has one."""
        ...


class PartitionCheckpoints:
    """Tracks which entities and offsets each partition has seen, and saves and restores their
    calibrator state (see the module docstring)."""

    def __init__(
        self,
        store: StateStore,
        interval_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.interval_s, self.clock = store, interval_s, clock
        self._keys: dict[Partition, set[str]] = {}
        self._offsets: dict[Partition, int] = {}
        self._generations: dict[Partition, int] = {}
        self._dirty: set[Partition] = set()
        self._saved_at = clock()

    def after_batch(
        self, calibrator: Calibrator, batch: WindowBatch, records: Sequence[SourceRecord]
    ) -> bool:
        """Note what ``records`` (whose good part is ``batch``) brought; save if one is due.
        Returns whether it saved."""
        seen = set(
            zip(((r.topic, r.partition) for r in batch.records), batch.keys.tolist(), strict=True)
        )
        for partition, key in seen:
            self._keys.setdefault(partition, set()).add(key)
        for partition, offset in next_offsets(records).items():
            self._offsets[partition] = max(self._offsets.get(partition, 0), offset)
            self._dirty.add(partition)
        if self.clock() - self._saved_at < self.interval_s:
            return False
        self.save(calibrator)
        return True

    def save(self, calibrator: Calibrator, partitions: Collection[Partition] | None = None) -> None:
        """Write the state of ``partitions`` (all held, when None) that changed since their last
        save, and wait until it is durable."""
        chosen = self._dirty if partitions is None else self._dirty & set(partitions)
        for partition in sorted(chosen):
            generation = self._generations.get(partition, 0) + 1
            keys = sorted(self._keys.get(partition, ()))
            saved = SavedState(calibrator.snapshot(keys), self._offsets[partition], generation)
            self.store.write(partition, saved)
            self._generations[partition] = generation
        self.store.flush()
        self._dirty -= chosen
        if partitions is None:
            self._saved_at = self.clock()

    def restore(
        self, calibrator: Calibrator, partitions: Collection[Partition], with_global: bool
    ) -> dict[Partition, SavedState]:
        """Load the last checkpoint of each of ``partitions`` into ``calibrator``; the global
        state is taken (from the first) only when ``with_global``. Returns what was found."""
        found = self.store.read(partitions)
        for partition, saved in sorted(found.items()):
            calibrator.restore(saved.snapshot, with_global=with_global)
            with_global = False
            keys = set(entity_names(saved.snapshot)) - {GLOBAL}
            self._keys.setdefault(partition, set()).update(keys)
            self._offsets[partition] = max(self._offsets.get(partition, 0), saved.offset)
            self._generations[partition] = saved.generation
            log.info(
                "calibrator_restored",
                topic=partition[0],
                partition=partition[1],
                offset=saved.offset,
                keys=len(keys),
                generation=saved.generation,
            )
        return found

    def forget(self, partitions: Collection[Partition]) -> None:
        """Stop tracking ``partitions`` (revoked: their next owner restores their checkpoint)."""
        for partition in partitions:
            self._keys.pop(partition, None)
            self._offsets.pop(partition, None)
            self._generations.pop(partition, None)
            self._dirty.discard(partition)
