"""A range of a topic as a finite source for backtests: every partition from an offset or a time
to an offset or a time, read by assignment, without a consumer group (a backtest leaves no trace on
the cluster). Alert ids are the topic's own positions, as the daemon's are; the records go to the
same ``Runner`` the daemon uses."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from kafka import KafkaConsumer, TopicPartition

from streamer.broker.sources import source_record
from streamer.client_config import kafka_python_options
from streamer.errors import TandemError, TopicError
from streamer.records import Partition, SourceRecord, first_offsets

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RangeBound:
    """One end of a topic range: an ``offset`` (the same for every partition) or a ``time``
    (each partition's first record at or after it); neither means the topic's start or end."""

    offset: int | None = None
    time: datetime | None = None

    def __post_init__(self) -> None:
        if self.offset is not None and self.time is not None:
            raise ValueError("a range bound is an offset or a time, not both")

    def describe(self, default: str) -> str:
        if self.offset is not None:
            return f"offset {self.offset}"
        if self.time is not None:
            return self.time.isoformat()
        return default


K = TypeVar("K", bound=Hashable)


def bound_offsets(
    bound: RangeBound,
    last: Mapping[K, int],
    at_end: bool,
    by_time: Callable[[int], Mapping[K, int | None]],
) -> dict[K, int]:
    """Per partition (the keys of ``last``, each partition's end), the offset ``bound`` names,
    at most the end. ``by_time``: each partition's first offset at or after an epoch ms (None:
    none is).

    A partition starts at offset 0; a seek below the log's start (records deleted by
    retention) is reset to its earliest record. Historical records keep their own timestamps,
    so a topic with time-based retention deletes them within minutes of a broker's retention
    check: ``tandem replay`` creates its topics without it."""
    if bound.offset is not None:
        return {p: min(max(bound.offset, 0), end) for p, end in last.items()}
    if bound.time is not None:
        found = by_time(int(bound.time.timestamp() * 1000))
        return {p: end if (at := found.get(p)) is None else at for p, end in last.items()}
    return dict(last) if at_end else dict.fromkeys(last, 0)


def settled(
    ask: Callable[[], dict[K, int]], attempts: int = 5, pause_s: float = 0.3
) -> dict[K, int]:
    """The partitions' end offsets, asked until two answers agree: a consumer opened right after
    a replay was seen to be answered 0 for partitions holding hundreds of records."""
    ends = ask()
    for _ in range(attempts):
        time.sleep(pause_s)
        again = ask()
        if again == ends:
            break
        ends = again
    return ends


class RangeReading:
    """What a range source does whatever its client: nothing to commit, a rewind as a seek, and
    a range whose records stop coming before its end an error. Subclasses set ``topic``,
    ``timeout_s`` and ``last_progress`` and implement ``seek``."""

    topic: str
    timeout_s: float
    last_progress: float

    def _arrived(self, records: Sequence[SourceRecord]) -> bool:
        """Whether ``records`` holds any (noted as progress); ``TopicError`` when none has
        arrived for ``timeout_s``."""
        if records:
            self.last_progress = time.monotonic()
            return True
        if time.monotonic() - self.last_progress > self.timeout_s:
            raise TopicError(
                f"no record of {self.topic!r} arrived for {self.timeout_s:g} s before the "
                "end of the range"
            )
        return False

    def commit(self, records: Sequence[SourceRecord]) -> None:
        """Nothing to commit: the range is read without a consumer group."""

    def rewind(self, records: Sequence[SourceRecord]) -> None:
        self.seek(first_offsets(records))

    def seek(self, offsets: Mapping[Partition, int]) -> None:
        raise NotImplementedError


class TopicRangeSource(RangeReading):
    """Every partition of ``topic`` from ``start`` (inclusive) to ``end`` (exclusive), in
    batches of at most ``batch_size``; read committed records only, as subscribers of a
    transactional daemon do. The end offsets are fixed when the source opens, so records
    arriving later are not read. A partition's records stay in offset order."""

    def __init__(
        self,
        client_options: Mapping[str, Any],
        topic: str,
        start: RangeBound,
        end: RangeBound,
        batch_size: int,
        poll_ms: int = 500,
        timeout_s: float = 30.0,
    ) -> None:
        self.topic, self.batch_size, self.poll_ms = topic, batch_size, poll_ms
        self.timeout_s = timeout_s
        self.consumer = KafkaConsumer(
            **kafka_python_options(
                KafkaConsumer,
                client_options,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                max_poll_records=batch_size,
            )
        )
        try:
            numbers = sorted(self.consumer.partitions_for_topic(topic) or ())
            if not numbers:
                raise TopicError(f"topic {topic!r} does not exist (or is not visible)")
            self.partitions = [TopicPartition(topic, n) for n in numbers]
            self.consumer.assign(self.partitions)
            last = self._settled_ends()
            self.starts = self._offsets(start, last, at_end=False)
            self.ends = self._offsets(end, last, at_end=True)
            for partition, offset in self.starts.items():
                self.consumer.seek(partition, offset)
        except BaseException:
            self.consumer.close()
            raise
        self.last_progress = time.monotonic()
        log.info(
            "topic_range_opened",
            topic=topic,
            starts={p.partition: o for p, o in self.starts.items()},
            ends={p.partition: o for p, o in self.ends.items()},
        )

    def _offsets(
        self, bound: RangeBound, last: Mapping[TopicPartition, int], at_end: bool
    ) -> dict[TopicPartition, int]:
        """Per partition, the offset ``bound`` names (``bound_offsets``)."""

        def by_time(stamp_ms: int) -> dict[TopicPartition, int | None]:
            found = self.consumer.offsets_for_times(dict.fromkeys(self.partitions, stamp_ms))
            return {p: None if found[p] is None else found[p].offset for p in self.partitions}

        return bound_offsets(bound, last, at_end, by_time)

    def _settled_ends(self) -> dict[TopicPartition, int]:
        return settled(lambda: dict(self.consumer.end_offsets(self.partitions)))

    @property
    def total(self) -> int:
        """Offsets in the range (records, but for transaction markers and aborted records)."""
        return sum(max(self.ends[p] - self.starts[p], 0) for p in self.partitions)

    @property
    def finished(self) -> bool:
        return all(self.consumer.position(p) >= self.ends[p] for p in self.partitions)

    def poll(self) -> list[SourceRecord]:
        """Up to ``batch_size`` records of the range; empty once it is read. Raises
        ``TopicError`` when no record arrives for ``timeout_s`` before the range's end."""
        while not self.finished:
            fetched = self.consumer.poll(timeout_ms=self.poll_ms, max_records=self.batch_size)
            records = [
                source_record(r)
                for partition, batch in fetched.items()
                for r in batch
                if r.offset < self.ends[partition]
            ]
            for partition in fetched:
                if self.consumer.position(partition) > self.ends[partition]:
                    self.consumer.pause(partition)  # read past the range: nothing more wanted
            if self._arrived(records):
                return records
        return []

    def seek(self, offsets: Mapping[Partition, int]) -> None:
        for (topic, number), offset in offsets.items():
            partition = TopicPartition(topic, number)
            self.consumer.resume(partition)
            self.consumer.seek(partition, offset)

    def close(self) -> None:
        self.consumer.close(autocommit=False)


def parse_bound(offset: int | None, when: str | None, which: str) -> RangeBound:
    """A range bound from ``--from-offset``/``--from-time`` (or ``--to-…``): ISO-8601 times
    without a zone are UTC."""
    if when is None:
        return RangeBound(offset=offset)
    try:
        stamp = datetime.fromisoformat(when)
    except ValueError:
        raise TandemError(f"--{which}-time {when!r} is not an ISO-8601 time") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return RangeBound(offset=offset, time=stamp)
