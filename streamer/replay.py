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

from streamer.broker import committed_offsets, read_to_end
from streamer.codec import JsonCodec, Limits
from streamer.errors import TandemError
from streamer.tables import WindowTable

log = structlog.get_logger(__name__)


class ReplayError(TandemError):
    """Windows were not acknowledged, or a topic could not be read back in time."""


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


def replay(options: Mapping[str, Any], topic: str, table: WindowTable, rate: float) -> ReplayReport:
    """Produce every window of ``table`` as a DESIGN §3 JSON record keyed by sensor, stamped with
    its own time, at ``rate`` windows per second (0: as fast as possible); wait for all acks."""
    codec = JsonCodec(Limits(window_length=table.windows.shape[1]))
    producer = KafkaProducer(acks="all", linger_ms=5, **options)
    sent_ms = np.empty(len(table))
    futures = []
    started = time.monotonic()
    try:
        for row, (key, ts, values) in enumerate(
            zip(table.keys.tolist(), table.ts_ms.tolist(), table.windows, strict=True)
        ):
            if rate > 0:
                ahead = started + row / rate - time.monotonic()
                if ahead > 0.002:
                    time.sleep(ahead)
            sent_ms[row] = time.time() * 1000
            futures.append(
                producer.send(
                    topic, key=key.encode(), value=codec.encode(key, ts, values), timestamp_ms=ts
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
