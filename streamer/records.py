"""What flows between the stages: source records in, decoded window batches and dead letters out.

A ``SourceRecord`` is one Kafka record (or one row of a file, for backtests) with its position. A
``WindowBatch`` holds the records that decoded, as arrays ready for the detector. A ``DeadLetter``
is a record that did not, with the reason a person can act on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

NO_LABEL = -1


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One input record: where it came from, its raw key and value, its timestamp (epoch ms)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def position(self) -> str:
        """``topic/partition/offset``: the record's address, and the base of its alert id."""
        return f"{self.topic}/{self.partition}/{self.offset}"


def next_offsets(records: Iterable[SourceRecord]) -> dict[tuple[str, int], int]:
    """Per (topic, partition), the offset after the last of ``records`` in it: what a commit or
    a checkpoint of them names."""
    offsets: dict[tuple[str, int], int] = {}
    for record in records:
        where = (record.topic, record.partition)
        offsets[where] = max(offsets.get(where, 0), record.offset + 1)
    return offsets


@dataclass(frozen=True)
class DeadLetter:
    """A record that could not be used, why (which field, what was wrong), and at which stage."""

    record: SourceRecord
    reason: str
    stage: str = "decode"

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers of the dead-letter record: the original ones, then DESIGN §3's."""
        return [
            *self.record.headers,
            ("tandem.error", self.reason.encode()),
            ("tandem.source", self.record.position.encode()),
            ("tandem.stage", self.stage.encode()),
        ]


@dataclass(frozen=True)
class WindowBatch:
    """n decoded windows: ``records`` (n,) in stream order, ``keys`` (n,) entity names, ``ts_ms``
    (n,) int64 event times, ``windows`` (n, D) float32, ``labels`` (n,) int8 (``NO_LABEL`` when
    the record carried none)."""

    records: list[SourceRecord]
    keys: NDArray[np.str_]
    ts_ms: NDArray[np.int64]
    windows: NDArray[np.float32]
    labels: NDArray[np.int8]

    def __len__(self) -> int:
        return len(self.records)

    @classmethod
    def empty(cls, width: int) -> WindowBatch:
        return cls(
            records=[],
            keys=np.empty(0, dtype=str),
            ts_ms=np.empty(0, dtype=np.int64),
            windows=np.empty((0, width), dtype=np.float32),
            labels=np.empty(0, dtype=np.int8),
        )
