"""What flows between the stages: source records in, decoded window batches and dead letters out.

A ``SourceRecord`` is one Kafka record (or one row of a file, for backtests) with its position. A
``WindowBatch`` holds the records that decoded, as arrays ready for the detector. A ``DeadLetter``
is a record that did not, with the reason a person can act on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

NO_LABEL = -1

Partition = tuple[str, int]
"""An input partition: (topic, partition number)."""


class SourceRecord(NamedTuple):
    """One input record: where it came from, its raw key and value, its timestamp (epoch ms).

    A named tuple rather than a dataclass: a daemon builds hundreds of thousands a second, and a
    tuple is three times cheaper to build and to ship between processes."""

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


RecordColumns = tuple[
    str, list[int], list[int], list["bytes | None"], list["bytes | None"], list[int], list[Any]
]
"""A batch of records as columns (topic, partitions, offsets, keys, values, timestamps, headers),
all of one topic: how the fetch process ships a batch (one pickle of a few flat lists costs a
fifth of pickling the records themselves)."""


def from_columns(columns: RecordColumns) -> list[SourceRecord]:
    """The records of ``columns``, in the same order."""
    topic, partitions, offsets, keys, values, timestamps, headers = columns
    return list(
        map(
            SourceRecord._make,
            zip(repeat(topic), partitions, offsets, keys, values, timestamps, headers),
        )
    )


def first_offsets(records: Sequence[SourceRecord]) -> dict[tuple[str, int], int]:
    """Per (topic, partition), the offset of the first of ``records`` in it (stream order, as for
    ``next_offsets``): where a rewind of them seeks back to."""
    return {(record.topic, record.partition): record.offset for record in reversed(records)}


def next_offsets(records: Iterable[SourceRecord]) -> dict[tuple[str, int], int]:
    """Per (topic, partition), the offset after the last of ``records`` in it: what a commit or
    a checkpoint of them names. ``records`` are in stream order (a partition's offsets rise),
    as every source delivers them, so the last record of a partition is its highest offset."""
    return {(record.topic, record.partition): record.offset + 1 for record in records}


@dataclass(frozen=True)
class DeadLetter:
    """A record that could not be used, why (which field, what was wrong), and at which stage."""

    record: SourceRecord
    reason: str
    stage: str = "decode"

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers of the dead-letter record: the original ones, then the reason, the
        source position and the stage."""
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


@dataclass
class BatchReport:
    """What one batch did: counts, and seconds per stage."""

    records: int = 0
    scored: int = 0
    alerts: int = 0
    dead_letters: int = 0
    checkpointed: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
