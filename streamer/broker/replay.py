"""Replaying windows into a topic and reading back what came of them: the producer side of a
rehearsal (records keyed by entity, stamped with the data's own time, at a chosen rate), the
group's committed offsets, and the alerts topic read to its end."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import structlog
from kafka import KafkaProducer
from numpy.typing import NDArray

from streamer.broker.admin import committed_offsets, read_to_end
from streamer.client_config import kafka_python_options
from streamer.config import KafkaConfig
from streamer.errors import ReplayError
from streamer.ingest.codec import Codec, JsonCodec, Limits
from streamer.ingest.tables import WindowTable

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ReplayReport:
    """What the replay sent: ``sent_ms`` (n,) wall-clock epoch ms at which each replay window was
    handed to the producer, in the replay's order; records per partition; seconds taken."""

    sent_ms: NDArray[np.float64]
    per_partition: dict[int, int]
    seconds: float

    @property
    def sent(self) -> int:
        return int(self.sent_ms.shape[0])


@dataclass(frozen=True)
class Pace:
    """When each window of a replay is sent: ``rate`` windows per second, or the data's own time
    sped up ``speed`` times (1: real time); with neither, as fast as the producer goes."""

    rate: float = 0.0
    speed: float = 0.0

    def __post_init__(self) -> None:
        if self.rate < 0 or self.speed < 0 or (self.rate > 0 and self.speed > 0):
            raise ValueError(f"a pace is a rate or a speed, not negative: {self}")

    def due_s(self, ts_ms: NDArray[np.int64]) -> NDArray[np.float64] | None:
        """(n,) seconds after the replay's start at which each window is due (for ``speed``,
        ``ts_ms`` must be in time order); None when unpaced."""
        if self.rate > 0:
            return np.arange(len(ts_ms), dtype=np.float64) / self.rate
        if self.speed > 0 and len(ts_ms):
            elapsed_ms: NDArray[np.float64] = (ts_ms - ts_ms[0]).astype(np.float64)
            return elapsed_ms / (1000 * self.speed)
        return None

    def describe(self) -> str:
        if self.rate > 0:
            return f"at {self.rate:,.0f} windows/s"
        if self.speed > 0:
            return "in real time" if self.speed == 1 else f"at {self.speed:g}x the data's time"
        return "as fast as the producer goes"


def replay(
    kafka: KafkaConfig,
    topic: str,
    table: WindowTable,
    pace: Pace,
    codec: Codec | None = None,
) -> ReplayReport:
    """Produce every window of ``table`` (in its order) as a record keyed by entity, stamped
    with its own time, paced by ``pace``; wait for all acks. ``codec`` encodes the value
    (default: JSON windows), with the window's label when the table has labels (the daemon
    ignores it; a backtest of the topic reads it). The producer is ``[kafka].client``'s; both
    partition keys alike (murmur2, as the Java client), so a key lands on the same partition."""
    codec = codec or JsonCodec(Limits(window_length=table.windows.shape[1]))
    producer = _producer(kafka)
    sent_ms = np.empty(len(table))
    due = pace.due_s(table.ts_ms)
    futures = []
    started = time.monotonic()
    try:
        labels = [None] * len(table) if table.labels is None else table.labels.tolist()
        for row, (key, ts, values, label) in enumerate(
            zip(table.keys.tolist(), table.ts_ms.tolist(), table.windows, labels, strict=True)
        ):
            if due is not None:
                ahead = started + due[row] - time.monotonic()
                if ahead > 0.002:
                    time.sleep(ahead)
            sent_ms[row] = time.time() * 1000
            futures.append(
                producer.send(
                    topic,
                    key=key.encode(),
                    value=codec.encode(key, ts, values, label),
                    timestamp_ms=ts,
                )
            )
        producer.flush()
        failed = [future.exception for future in futures if future.failed()]
    finally:
        producer.close()
    if failed:
        raise ReplayError(
            f"{len(failed)} of {len(futures)} replayed windows were not acknowledged: {failed[0]!r}"
        )
    per_partition = Counter(future.value.partition for future in futures)
    return ReplayReport(sent_ms, dict(sorted(per_partition.items())), time.monotonic() - started)


def _producer(kafka: KafkaConfig) -> Any:
    """An ``acks=all`` producer of ``[kafka].client`` with kafka-python's ``send``/``flush``/
    ``close`` (librdkafka's: ``streamer.broker.librdkafka.RdkafkaProducer``)."""
    if kafka.client == "librdkafka":
        from streamer.broker.librdkafka import RdkafkaProducer

        return RdkafkaProducer(kafka)
    return KafkaProducer(
        **kafka_python_options(KafkaProducer, kafka.client_options(), acks="all", linger_ms=5)
    )


def committed(options: Mapping[str, Any], group: str, topic: str) -> int:
    """Sum over ``topic``'s partitions of the offsets ``group`` has committed."""
    return sum(committed_offsets(options, group, topic).values())


def wait_until_committed(
    options: Mapping[str, Any],
    group: str,
    topic: str,
    total: int,
    alive: Callable[[], bool],
    timeout_s: float,
) -> int:
    """Poll the group's committed offsets until they cover ``total`` records, the daemon stops
    (``alive()`` false) or ``timeout_s`` passes; the last sum seen."""
    deadline = time.monotonic() + timeout_s
    done = committed(options, group, topic)
    while done < total and alive() and time.monotonic() < deadline:
        time.sleep(0.25)
        done = committed(options, group, topic)
    return done


def read_alerts(options: Mapping[str, Any], topic: str, timeout_s: float) -> list[dict[str, Any]]:
    """Every alert in ``topic`` (all partitions, up to their current ends), duplicates of an
    ``alert_id`` dropped, in topic order; read committed, as ``tandem alerts`` reads them."""
    alerts: dict[str, dict[str, Any]] = {}
    for record in read_to_end(options, topic, timeout_s):
        alert = orjson.loads(record.value)
        alerts.setdefault(str(alert["alert_id"]), alert)
    return list(alerts.values())
