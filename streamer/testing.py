"""In-memory source, sinks and checkpoint store: the run loop without a broker.

For tests and backtests over data already in memory. Each records what happened to it in an
optional shared ``journal`` (a list of ``(event, detail)``), so the order of flushes, checkpoints
and commits can be checked.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from streamer.checkpoints import SavedState
from streamer.records import Partition, SourceRecord, next_offsets

Journal = list[tuple[str, Any]]


class ListSource:
    """Serves ``records`` in batches of ``batch_size``; remembers what was committed."""

    def __init__(
        self, records: Sequence[SourceRecord], batch_size: int, journal: Journal | None = None
    ) -> None:
        self.records, self.batch_size = list(records), batch_size
        self.cursor = 0
        self.committed: dict[tuple[str, int], int] = {}
        self.journal = journal if journal is not None else []

    def poll(self) -> list[SourceRecord]:
        batch = self.records[self.cursor : self.cursor + self.batch_size]
        self.cursor += len(batch)
        return batch

    def commit(self, records: Sequence[SourceRecord]) -> None:
        self.committed.update(next_offsets(records))
        self.journal.append(("commit", records[-1].offset if records else None))

    def rewind(self, records: Sequence[SourceRecord]) -> None:
        if records:
            self.cursor = min(self.cursor, self.records.index(records[0]))
        self.journal.append(("rewind", records[0].offset if records else None))

    def seek(self, offsets: Mapping[Partition, int]) -> None:
        """Serve each partition of ``offsets`` from that offset on, as a consumer does: its
        records already served from there come next (in order), the others stay where they are.
        """
        for partition, offset in offsets.items():
            served, ahead = self.records[: self.cursor], self.records[self.cursor :]
            again = [r for r in served if _of(r, partition) and r.offset >= offset]
            self.records = [r for r in served if r not in again]
            self.cursor = len(self.records)
            self.records += again + [
                r for r in ahead if not (_of(r, partition) and r.offset < offset)
            ]
        self.journal.append(("seek", dict(offsets)))


def _of(record: SourceRecord, partition: Partition) -> bool:
    return (record.topic, record.partition) == partition


class ListSink:
    """Keeps what was flushed in ``items``; ``fail`` makes the next flush raise."""

    def __init__(self, name: str, journal: Journal | None = None) -> None:
        self.name = name
        self.items: list[Any] = []
        self.pending: list[Any] = []
        self.fail: Exception | None = None
        self.journal = journal if journal is not None else []

    def add(self, items: Sequence[Any]) -> None:
        self.pending.extend(items)

    def flush(self) -> None:
        if self.fail is not None:
            self.pending = []  # as a producer's failed records: none of them counts as delivered
            raise self.fail
        self.items.extend(self.pending)
        self.journal.append((f"{self.name}.flush", len(self.pending)))
        self.pending = []


class MemoryStateStore:
    """Checkpoints in a dict; ``journal`` (optional) records each flush, for ordering tests."""

    def __init__(self, journal: Journal | None = None) -> None:
        self.saved: dict[Partition, SavedState] = {}
        self.pending: dict[Partition, SavedState] = {}
        self.journal = journal if journal is not None else []

    def write(self, partition: Partition, saved: SavedState) -> None:
        self.pending[partition] = saved

    def flush(self) -> None:
        self.saved.update(self.pending)
        offsets = {f"{t}/{p}": s.offset for (t, p), s in sorted(self.pending.items())}
        self.journal.append(("checkpoint", offsets))
        self.pending = {}

    def read(self, partitions: Collection[Partition]) -> dict[Partition, SavedState]:
        return {p: self.saved[p] for p in partitions if p in self.saved}


class NoCheckpoints:
    """A checkpoint that keeps nothing: a backtest is never resumed, so its calibrator state
    need not be saved (the ``Checkpoint`` protocol of ``streamer.runner``)."""

    def after_batch(
        self, state: Any, batch: Any, records: Sequence[SourceRecord], force: Any = ()
    ) -> bool:
        return False

    def save(self, state: Any, partitions: Collection[Partition] | None = None) -> None:
        """Nothing to save."""

    def save_all(self, state: Any) -> None:
        """Nothing to save."""

    def restore(
        self, state: Any, partitions: Collection[Partition], with_global: bool
    ) -> dict[Partition, Any]:
        return {}

    def rewind(self, records: Sequence[SourceRecord]) -> None:
        """Nothing was noted."""

    def forget(self, partitions: Collection[Partition]) -> None:
        """Nothing to forget."""
