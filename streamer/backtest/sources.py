"""A file of windows as a finite source for backtests.

``FileSource`` serves each window of a ``WindowTable`` as a record of a pseudo-topic named after the
file, partition 0, offset = row, encoded with the run's codec (as ``tandem replay`` would send it),
so the codec's checks apply to file data too and alert ids read ``file/0/row``. It commits
nothing: a backtest is not resumed. (A topic range is ``streamer.broker.range_source``.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from streamer.ingest.codec import Codec
from streamer.ingest.tables import WindowTable
from streamer.records import Partition, SourceRecord


class FileSource:
    """Serves the windows of ``table`` in its order, ``batch_size`` at a time, as records of
    topic ``name``; encoding happens batch by batch, so memory holds one batch of records."""

    def __init__(self, table: WindowTable, codec: Codec, name: str, batch_size: int) -> None:
        self.table, self.codec, self.name = table, codec, name
        self.batch_size = batch_size
        self.cursor = 0

    @property
    def total(self) -> int:
        """Windows the source serves in all."""
        return len(self.table)

    @property
    def finished(self) -> bool:
        return self.cursor >= len(self.table)

    def poll(self) -> list[SourceRecord]:
        start, stop = self.cursor, min(self.cursor + self.batch_size, len(self.table))
        labels = self.table.labels
        records = [
            SourceRecord(
                self.name,
                0,
                row,
                key.encode(),
                self.codec.encode(
                    key, ts, self.table.windows[row], None if labels is None else int(labels[row])
                ),
                ts,
            )
            for row, key, ts in zip(
                range(start, stop),
                self.table.keys[start:stop].tolist(),
                self.table.ts_ms[start:stop].tolist(),
                strict=True,
            )
        ]
        self.cursor = stop
        return records

    def commit(self, records: Sequence[SourceRecord]) -> None:
        """Nothing to commit: a backtest is not resumed."""

    def rewind(self, records: Sequence[SourceRecord]) -> None:
        if records:
            self.cursor = min(self.cursor, records[0].offset)

    def seek(self, offsets: Mapping[Partition, int]) -> None:
        """Serve from row ``offsets[(name, 0)]`` on (the file's only partition)."""
        if (self.name, 0) in offsets:
            self.cursor = offsets[(self.name, 0)]
