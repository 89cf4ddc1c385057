"""The end-to-end demo at this stage: generated windows into a topic, read back by a consumer group.

It exercises the parts that exist so far against a real broker: topic creation, a keyed producer
that waits for acknowledgements, and a consumer group with auto-commit off that commits after each
polled batch. Later stages grow it into train → run → alerts.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import structlog
from kafka import KafkaConsumer, KafkaProducer

from streamer.broker import BrokerInfo, TopicSpec, create_topics, delete_topics, wait_for_broker
from streamer.codec import JsonCodec, Limits
from streamer.config import TandemConfig
from streamer.records import SourceRecord
from streamer.synthetic import SensorFeed, sensor_feed

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DemoSummary:
    """What went through: counts, where it landed, and how long each leg took (seconds)."""

    broker: BrokerInfo
    topic: str
    partitions: int
    window: int
    produced: int
    consumed: int
    malformed: int
    per_key: dict[str, int] = field(default_factory=dict)
    per_partition: dict[int, int] = field(default_factory=dict)
    produce_s: float = 0.0
    consume_s: float = 0.0


def run_demo(
    config: TandemConfig,
    n_windows: int = 10_000,
    n_keys: int = 8,
    window: int = 16,
    partitions: int = 4,
    timeout_s: float = 120.0,
    keep_topic: bool = False,
) -> DemoSummary:
    """Produce ``n_windows`` generated windows to a fresh topic and consume them all back.

    The topic is ``<input_topic>.demo-<run id>`` so runs never see each other's records; it is
    deleted afterwards unless ``keep_topic``.
    """
    options = config.kafka.client_options()
    broker = wait_for_broker(options, timeout_s=timeout_s)
    run_id = uuid.uuid4().hex[:8]
    topic = f"{config.kafka.input_topic}.demo-{run_id}"
    create_topics(options, [TopicSpec(topic, partitions=partitions)])
    feed = sensor_feed(n_windows, n_keys=n_keys, window=window)
    try:
        produce_s = _produce(options, topic, feed)
        consumed, malformed, per_key, per_partition, consume_s = _consume(
            config, topic, expected=len(feed), window=window, timeout_s=timeout_s
        )
    finally:
        if not keep_topic:
            delete_topics(options, [topic])
    return DemoSummary(
        broker=broker,
        topic=topic,
        partitions=partitions,
        window=window,
        produced=len(feed),
        consumed=consumed,
        malformed=malformed,
        per_key=dict(sorted(per_key.items())),
        per_partition=dict(sorted(per_partition.items())),
        produce_s=produce_s,
        consume_s=consume_s,
    )


def _produce(options: dict[str, object], topic: str, feed: SensorFeed) -> float:
    """Send each window as a DESIGN §3 JSON record keyed by entity; wait for all acks."""
    started = time.perf_counter()
    codec = JsonCodec(Limits(window_length=feed.windows.shape[1]))
    producer = KafkaProducer(acks="all", linger_ms=20, batch_size=256 * 1024, **options)
    try:
        futures = [
            producer.send(
                topic,
                key=str(key).encode(),
                value=codec.encode(str(key), int(ts), values),
                timestamp_ms=int(ts),
            )
            for key, ts, values in zip(feed.keys, feed.ts_ms, feed.windows, strict=True)
        ]
        producer.flush()
        failed = [future.exception for future in futures if future.failed()]
    finally:
        producer.close()
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(futures)} demo records were not acknowledged: {failed[0]!r}"
        )
    elapsed = time.perf_counter() - started
    log.info("demo_produced", topic=topic, records=len(futures), seconds=round(elapsed, 3))
    return elapsed


def _consume(
    config: TandemConfig, topic: str, expected: int, window: int, timeout_s: float
) -> tuple[int, int, Counter[str], Counter[int], float]:
    """Read the topic in a consumer group, committing each batch, until ``expected`` arrive."""
    started = time.perf_counter()
    consumer = KafkaConsumer(
        topic,
        group_id=f"{config.kafka.group_id}.{topic}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **config.kafka.client_options(),
    )
    codec = JsonCodec(Limits(window_length=window))
    consumed = malformed = 0
    per_key: Counter[str] = Counter()
    per_partition: Counter[int] = Counter()
    deadline = time.monotonic() + timeout_s
    try:
        while consumed < expected and time.monotonic() < deadline:
            batches = consumer.poll(
                timeout_ms=config.batch.max_wait_ms, max_records=config.batch.max_records
            )
            for partition, records in batches.items():
                per_partition[partition.partition] += len(records)
                batch, dead = codec.decode(
                    [
                        SourceRecord(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)
                        for r in records
                    ]
                )
                consumed += len(records)
                per_key.update(batch.keys.tolist())
                malformed += len(dead)
                for letter in dead:
                    log.warning(
                        "demo_malformed_record", source=letter.record.position, error=letter.reason
                    )
            if batches:
                consumer.commit()
    finally:
        consumer.close()
    elapsed = time.perf_counter() - started
    log.info(
        "demo_consumed",
        topic=topic,
        records=consumed,
        malformed=malformed,
        seconds=round(elapsed, 3),
    )
    return consumed, malformed, per_key, per_partition, elapsed
