"""Pipeline throughput and latency against the real broker, printed as JSON.

On one pre-filled input topic (``--records`` JSON windows of 16 features over ``--keys``
entities, ``--partitions`` partitions), each phase in a consumer group of its own:

- ``raw``: the baseline, kafka-python alone: a ``KafkaConsumer`` in a group with the settings
  ``KafkaSource`` uses (auto-commit off, ``max_poll_records`` = ``[batch].max_records``), polling
  and committing after each poll, decoding nothing.
- ``product``: the daemon's path, ``build_pipeline`` and ``Runner.step`` until every record is
  committed: poll, decode, score, calibrate, alerts and dead letters acknowledged, calibrator
  checkpoint written, offsets committed.

Both rates are steady state: the clock starts once the first batch is committed, so joining the
group is left out of both. Then, on a fresh topic and group, a producer thread sends at a steady
``--rate`` for ``--latency-s`` seconds, each record stamped with its send time, while the runner
polls and processes; a record's latency is the wall clock once ``Runner.process`` returned (alerts
acknowledged, offsets committed) minus its timestamp. Records sent before the runner joined its
group and warmed its calibrator up are not counted.

The detector is a small cascade trained in-process on the same synthetic feed, saved and loaded
as the daemon loads a bundle. Configuration comes from ``load_config`` (``--config`` and the
``TANDEM_*`` variables: ``TANDEM_KAFKA_BOOTSTRAP``, ``TANDEM_BATCH_MAX_RECORDS``, ...); topics and
groups are fresh per run and deleted at the end. Logs go to stderr (``TANDEM_LOG_LEVEL=warning``
quiets them), the JSON alone to stdout. Exit status 1 if no broker answers.

- ``readings``: the daemon's path again, with ``[codec].input = "readings"``: one JSON reading per
  record (``{"key", "ts", "x"}``) over the same keys, as many per key as make the same number of
  scored windows (W - 1 more per key), cut into windows by the daemon. ``readings_over_windows``
  is its scored windows/s over ``product``'s (floor 0.8, issue: readings input).

- ``raw_librdkafka`` and ``librdkafka`` (``--no-librdkafka`` skips them): the same two on the
  librdkafka client (confluent-kafka): ``consume`` batches of ``max_records`` decoded by the JSON
  codec with an asynchronous commit after each, then the daemon's path with
  ``[kafka].client = "librdkafka"``. ``librdkafka_over_kafka_python`` is the daemon's records/s
  on librdkafka over kafka-python's (floor 2), ``librdkafka_over_raw_librdkafka`` over the raw
  librdkafka consume and decode (floor 0.5).
- ``product_f32`` and ``librdkafka_f32`` (``--no-f32`` skips them): the daemon on both clients
  over the same windows as raw float32 records (``[codec].format = "f32"``, one ``frombuffer``
  per batch); ``librdkafka_over_kafka_python_f32`` is the second's records/s over the first's
  (floor 3).

Floor: product ≥ 0.8 times raw records/s (``floor_met``: reported, not asserted).
Usage: .venv/bin/python bench/bench_pipeline.py [--records 200000] [--rate 2000] [--latency-s 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import structlog
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from detectors.backend import select_device
from detectors.base import DevicePreference
from detectors.cascade import CascadeDetector
from detectors.spec import AutoencoderSpec, CascadeSpec
from streamer.broker.admin import (
    TopicSpec,
    admin_client,
    create_topics,
    delete_topics,
    wait_for_broker,
)
from streamer.broker.daemon import build_pipeline
from streamer.broker.prefetch import PrefetchingSource
from streamer.broker.sources import KafkaSource
from streamer.config import KafkaConfig, TandemConfig, load_config
from streamer.demo.synthetic import sensor_feed
from streamer.errors import BrokerUnavailableError, TandemError
from streamer.ingest.codec import F32Codec, JsonCodec, Limits
from streamer.ingest.features import FeatureLayout
from streamer.logging import configure_logging
from streamer.records import BatchReport

log = structlog.get_logger("bench.pipeline")

FLOOR = 0.8
WINDOW = 16
TRAINING_WINDOWS = 8000
SPEC = CascadeSpec(
    ae1=AutoencoderSpec(hidden=(12,), latent=6),
    ae2=AutoencoderSpec(hidden=(), latent=2),
    epochs=8,
)
IDLE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Feed:
    """The input records, ready to send: record keys, JSON values and partitions, in stream order.

    An entity's records all go to one partition, as keyed records would; entities are dealt to
    the partitions evenly (entity ``k`` to ``k % partitions``) rather than by key hash, which
    spreads 100 keys over 4 partitions unevenly and costs the producer a murmur2 per record.
    """

    keys: list[bytes]
    values: list[bytes]
    partitions: list[int]


@dataclass
class Phase:
    """What one throughput phase measured after its first batch: records, seconds, batches."""

    records: int
    seconds: float
    batches: int
    first_batch_s: float
    """From the phase's start (group join included) to its first committed batch."""
    stages: dict[str, float] = field(default_factory=dict)
    scored: int = 0
    """Windows scored over the measured part."""
    alerts: int = 0
    dead_letters: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds over the measured part, per process (the fetch process, if there is one)."""

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def scored_rate(self) -> float:
        return self.scored / self.seconds


class Resources:
    """Topics and consumer groups this run made, deleted (best effort) by ``clean_up``."""

    def __init__(self, client_options: dict[str, Any]) -> None:
        self.client_options = client_options
        self.topics: list[str] = []
        self.groups: list[str] = []

    def phase_config(self, base: TandemConfig, input_topic: str, phase: str) -> TandemConfig:
        """``base`` reading ``input_topic`` in a new group, new alert and dead-letter topics."""
        run = uuid.uuid4().hex[:8]
        kafka = KafkaConfig.model_validate(
            {
                **base.kafka.model_dump(),
                "input_topic": input_topic,
                "alerts_topic": f"bench.{phase}.alerts.{run}",
                "dead_letter_topic": f"bench.{phase}.dead-letter.{run}",
                "group_id": f"bench.{phase}.{run}",
            }
        )
        self.groups.append(kafka.group_id)
        self.topics.extend([kafka.alerts_topic, kafka.dead_letter_topic, kafka.state_topic])
        return base.model_copy(update={"kafka": kafka})

    def new_topic(self, stem: str, partitions: int) -> str:
        name = f"bench.{stem}.{uuid.uuid4().hex[:8]}"
        self.topics.append(name)
        create_topics(self.client_options, [TopicSpec(name, partitions)])
        return name

    def clean_up(self) -> None:
        try:
            delete_topics(self.client_options, self.topics)
        except (KafkaError, TandemError) as error:
            log.warning("bench_topics_left", topics=self.topics, error=repr(error))
        try:
            with admin_client(self.client_options, timeout_s=30) as admin:
                admin.delete_groups(self.groups)
        except (KafkaError, TandemError) as error:
            log.warning("bench_groups_left", groups=self.groups, error=repr(error))


def make_feed(records: int, keys: int, partitions: int) -> tuple[Feed, np.ndarray]:
    """``records`` JSON windows (values to 3 decimals, as a feed would send them) over ``keys``
    entities, and (n, 16) float32 windows of the same feed to train on."""
    feed = sensor_feed(records, n_keys=keys, window=WINDOW, seed=0)
    rounded = np.round(feed.windows.astype(np.float64), 3)
    codec = JsonCodec(Limits(WINDOW))
    names = [str(key) for key in feed.keys]
    values = [
        codec.encode(names[i], int(feed.ts_ms[i]), rounded[i]) for i in range(len(feed.windows))
    ]
    rows = np.sort(
        np.random.default_rng(0).choice(records, min(records, TRAINING_WINDOWS), replace=False)
    )
    feed_partitions = [(row % keys) % partitions for row in range(records)]
    encoded = Feed([name.encode() for name in names], values, feed_partitions)
    return encoded, rounded[rows].astype(np.float32)


def make_f32_feed(feed: Feed, records: int, keys: int) -> Feed:
    """The same windows as ``make_feed``'s, each a raw float32 record (``[codec].format =
    "f32"``: the key is the record's, the time its timestamp), on the same partitions."""
    windows = sensor_feed(records, n_keys=keys, window=WINDOW, seed=0).windows
    codec = F32Codec(Limits(WINDOW))
    rounded = np.round(windows.astype(np.float64), 3)
    values = [codec.encode("", 0, row) for row in rounded]
    return Feed(feed.keys, values, feed.partitions)


def make_readings_feed(records: int, keys: int, partitions: int) -> Feed:
    """Readings of the bench's one channel ``x`` that the daemon cuts into ``records`` windows of
    ``WINDOW`` steps: ``records // keys + WINDOW - 1`` per key, interleaved in time order, JSON
    (values to 3 decimals)."""
    per_key = records // keys + WINDOW - 1
    rng = np.random.default_rng(1)
    steps = np.arange(per_key)
    series = np.sin(steps[None, :] / 9.0 + rng.uniform(0, 6, size=(keys, 1)))
    series = np.round(series + rng.normal(0, 0.05, size=series.shape), 3)
    codec = JsonCodec(Limits(1, layout=FeatureLayout.of(("x",))), readings=True)
    names = [f"k{key}" for key in range(keys)]
    out = Feed([], [], [])
    for step in range(per_key):
        for key in range(keys):
            out.keys.append(names[key].encode())
            ts = 1_764_000_000_000 + step * 1000
            out.values.append(codec.encode(names[key], ts, series[key, step : step + 1]))
            out.partitions.append(key % partitions)
    return out


def train_detector(windows: np.ndarray, device: DevicePreference, scratch: Path) -> CascadeDetector:
    """Fit the small cascade, save it as a bundle and load it back as the daemon does."""
    names = [f"x[t-{WINDOW - 1 - step}]" for step in range(WINDOW)]
    path = scratch / "bench-cascade"
    CascadeDetector(SPEC, feature_names=names, device="cpu").fit(windows).save(path)
    return CascadeDetector.load(path, expected_window=WINDOW, device=device)


def prefill(client_options: dict[str, Any], topic: str, feed: Feed) -> float:
    """Send every record of ``feed`` and wait for the acknowledgements; records/s."""
    producer = KafkaProducer(
        acks=1,
        linger_ms=20,
        batch_size=512 * 1024,
        **client_options,
    )
    started = time.perf_counter()
    try:
        for key, value, partition in zip(feed.keys, feed.values, feed.partitions, strict=True):
            producer.send(topic, key=key, value=value, partition=partition)
        producer.flush()
    finally:
        producer.close()
    return len(feed.values) / (time.perf_counter() - started)


def cpu_seconds(pid: int | None = None) -> float:
    """User plus system CPU seconds of process ``pid`` (this one by default), all threads."""
    stat = Path(f"/proc/{pid or os.getpid()}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_pid() -> int | None:
    """The pid of this checkout's broker (``scripts/kafka.sh``), if it runs here."""
    home = Path(os.environ.get("TANDEM_BROKER_HOME", Path(__file__).parents[1] / ".kafka"))
    try:
        pid = int((home / "broker.pid").read_text().strip())
        cpu_seconds(pid)
    except (OSError, ValueError):
        return None
    return pid


def with_broker(used: dict[str, float]) -> dict[str, float]:
    """``used`` plus the broker's CPU seconds so far, when the broker runs on this machine."""
    pid = broker_pid()
    return used if pid is None else {**used, "broker": cpu_seconds(pid)}


def until_idle(what: str, done: int, total: int, last_progress: float) -> None:
    if time.monotonic() - last_progress > IDLE_TIMEOUT_S:
        raise TimeoutError(f"{what}: {done} of {total} records arrived, none for {IDLE_TIMEOUT_S}s")


def timed_polls(what: str, total: int, started: float, poll_once: Callable[[], int]) -> Phase:
    """Call ``poll_once`` (records it handled) until ``total`` records; the steady-state phase
    after the first batch, with the consumer's (this process's) and the broker's CPU seconds."""
    done, batches, first, clock = 0, 0, 0, 0.0
    cpu: dict[str, float] = {}
    progress = time.monotonic()
    while done < total:
        got = poll_once()
        if not got:
            until_idle(what, done, total, progress)
            continue
        done += got
        progress = time.monotonic()
        if not first:
            first, clock = done, time.perf_counter()
            cpu = with_broker({"consumer": cpu_seconds()})
        else:
            batches += 1
    return Phase(
        done - first,
        time.perf_counter() - clock,
        batches,
        clock - started,
        cpu_s={
            name: round(seconds - cpu[name], 2)
            for name, seconds in with_broker({"consumer": cpu_seconds()}).items()
        },
    )


def raw_librdkafka_phase(config: TandemConfig, total: int) -> Phase:
    """confluent-kafka alone: ``consume`` batches, decoded by the JSON codec (as the daemon's
    first stage), committed asynchronously after each."""
    from confluent_kafka import Consumer

    from streamer.broker.librdkafka import rdkafka_options
    from streamer.records import SourceRecord

    kafka, batch = config.kafka, config.batch
    codec = JsonCodec(Limits(WINDOW))
    started = time.perf_counter()
    options = {**rdkafka_options(kafka), "group.id": kafka.group_id}
    consumer = Consumer({**options, "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe([kafka.input_topic])

    def consume_once() -> int:
        messages = consumer.consume(batch.max_records, timeout=batch.max_wait_ms / 1000)
        records = [
            SourceRecord(m.topic(), m.partition(), m.offset(), m.key(), m.value(), 0)
            for m in messages
            if m.error() is None
        ]
        if records:
            codec.decode(records)
            consumer.commit(asynchronous=True)
        return len(records)

    try:
        return timed_polls("raw librdkafka consumer", total, started, consume_once)
    finally:
        consumer.close()


def raw_phase(config: TandemConfig, total: int) -> Phase:
    """kafka-python alone, with ``KafkaSource``'s consumer settings; commit after each poll."""
    kafka, batch = config.kafka, config.batch
    started = time.perf_counter()
    consumer = KafkaConsumer(
        group_id=kafka.group_id,
        enable_auto_commit=False,
        auto_offset_reset=kafka.auto_offset_reset,
        max_poll_records=batch.max_records,
        metadata_max_age_ms=30_000,
        **kafka.client_options(),
    )
    try:
        deadline = time.monotonic() + IDLE_TIMEOUT_S
        while not consumer.partitions_for_topic(kafka.input_topic):
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {kafka.input_topic!r} not visible to the consumer")
            time.sleep(0.2)
        consumer.subscribe([kafka.input_topic])

        def poll_once() -> int:
            fetched = consumer.poll(timeout_ms=batch.max_wait_ms)
            offsets = {
                partition: OffsetAndMetadata(records[-1].offset + 1, "", -1)
                for partition, records in fetched.items()
                if records
            }
            if offsets:
                consumer.commit(offsets)
            return sum(len(records) for records in fetched.values())

        return timed_polls("raw consumer", total, started, poll_once)
    finally:
        consumer.close(autocommit=False)


def product_phase(config: TandemConfig, detector: CascadeDetector, total: int) -> Phase:
    """``build_pipeline`` and ``Runner.step`` until all ``total`` records are committed."""
    started = time.perf_counter()
    built = build_pipeline(config, detector, name=detector.name_)
    runner, source = built.runner, built.source
    try:
        reports: list[BatchReport] = []
        first: BatchReport | None = None
        clock, done, progress = 0.0, 0, time.monotonic()
        while done < total:
            report = runner.step()
            if report is None:
                until_idle("product runner", done, total, progress)
                continue
            done += report.records
            progress = time.monotonic()
            if first is None:
                first, clock, cpu = report, time.perf_counter(), processes_cpu(source)
            else:
                reports.append(report)
        elapsed = time.perf_counter() - clock
        cpu_used = {
            name: round(seconds - cpu[name], 2) for name, seconds in processes_cpu(source).items()
        }
    finally:
        source.close()
    stages: dict[str, float] = {}
    for report in reports:
        for stage, seconds in report.seconds.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    stages["poll"] = elapsed - sum(stages.values())
    return Phase(
        records=sum(r.records for r in reports),
        seconds=elapsed,
        batches=len(reports),
        first_batch_s=clock - started,
        stages={stage: round(seconds, 3) for stage, seconds in stages.items()},
        scored=sum(r.scored for r in reports),
        alerts=sum(r.alerts for r in [first, *reports] if r is not None),
        dead_letters=sum(r.dead_letters for r in [first, *reports] if r is not None),
        cpu_s=cpu_used,
    )


def processes_cpu(source: KafkaSource | PrefetchingSource) -> dict[str, float]:
    """CPU seconds so far of the daemon (this process), of its fetch process if any, and of
    the broker if it runs here."""
    used = {"daemon": cpu_seconds()}
    if isinstance(source, PrefetchingSource):
        used["fetch_process"] = cpu_seconds(source.process.pid)
    return with_broker(used)


def send_steadily(
    producer: KafkaProducer,
    topic: str,
    feed: Feed,
    count: int,
    rate: float,
    offset: int,
    took_s: list[float],
) -> None:
    """Send ``count`` records on a fixed schedule, record ``i`` at ``i / rate`` seconds (a sender
    that falls behind catches up), each stamped with the wall clock at its send; append the
    seconds the sending took to ``took_s``."""
    started = time.perf_counter()
    for i in range(count):
        pause = started + i / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        j = (offset + i) % len(feed.values)
        producer.send(
            topic,
            key=feed.keys[j],
            value=feed.values[j],
            partition=feed.partitions[j],
            timestamp_ms=int(time.time() * 1000),
        )
    producer.flush()
    took_s.append(time.perf_counter() - started)


@dataclass
class Latency:
    """Per measured record, milliseconds from its timestamp to ``poll`` handing over its batch
    (``polled``) and to ``process`` returning (``done``); per batch, milliseconds in ``process``."""

    polled: np.ndarray
    done: np.ndarray
    process_ms: np.ndarray
    sent_per_s: float

    def percentile(self, which: str, q: float) -> float:
        values: np.ndarray = getattr(self, which)
        return round(float(np.percentile(values, q)), 1)


def latency_phase(
    config: TandemConfig,
    detector: CascadeDetector,
    feed: Feed,
    rate: float,
    seconds: float,
) -> Latency:
    """Run the product at a steady input rate; see the module docstring."""
    producer = KafkaProducer(acks=1, linger_ms=0, **config.kafka.client_options())
    built = build_pipeline(config, detector, name=detector.name_)
    runner, source = built.runner, built.source
    topic = config.kafka.input_topic
    polled: list[float] = []
    done: list[float] = []
    process_ms: list[float] = []

    def process_until(count: int, measure: bool) -> None:
        processed, progress = 0, time.monotonic()
        while processed < count:
            records = runner.source.poll()
            if not records:
                until_idle("latency runner", processed, count, progress)
                continue
            handed = time.time() * 1000
            runner.process(records)
            finished = time.time() * 1000
            if measure:
                polled.extend(handed - r.timestamp_ms for r in records)
                done.extend(finished - r.timestamp_ms for r in records)
                process_ms.append(finished - handed)
            processed += len(records)
            progress = time.monotonic()

    try:
        warmup = config.calibration.warmup + config.batch.max_records
        for i in range(warmup):
            j = i % len(feed.values)
            producer.send(
                topic, key=feed.keys[j], value=feed.values[j], partition=feed.partitions[j]
            )
        producer.flush()
        process_until(warmup, measure=False)
        count = round(rate * seconds)
        took_s: list[float] = []
        sender = threading.Thread(
            target=send_steadily,
            args=(producer, topic, feed, count, rate, warmup, took_s),
            name="bench-steady-producer",
            daemon=True,
        )
        sender.start()
        process_until(count, measure=True)
        sender.join()
    finally:
        source.close()
        producer.close()
    sent_per_s = count / took_s[0] if took_s else float("nan")
    return Latency(np.asarray(polled), np.asarray(done), np.asarray(process_ms), sent_per_s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate", type=float, default=2000.0, help="latency phase, records/s")
    parser.add_argument("--latency-s", type=float, default=10.0)
    parser.add_argument("--config", type=Path, default=None, help="a tandem TOML config")
    parser.add_argument("--broker-wait-s", type=float, default=10.0)
    parser.add_argument("--no-readings", action="store_true", help="skip the readings-input phase")
    parser.add_argument(
        "--no-librdkafka", action="store_true", help="skip the librdkafka client's phases"
    )
    parser.add_argument("--no-f32", action="store_true", help="skip the f32 codec's phases")
    args = parser.parse_args()
    if args.records < 1000 or args.keys < 1 or args.partitions < 1 or args.rate <= 0:
        parser.error("--records must be at least 1000; --keys, --partitions, --rate positive")
    wall = time.perf_counter()
    config = load_config(args.config)
    configure_logging(level=config.log.level, fmt=config.log.format, stream=sys.stderr)
    options = config.kafka.client_options()
    try:
        info = wait_for_broker(options, timeout_s=args.broker_wait_s)
    except BrokerUnavailableError as error:
        print(
            f"bench_pipeline: no Kafka broker at {config.kafka.bootstrap} ({error}). Start one "
            "with scripts/kafka.sh start, or point TANDEM_KAFKA_BOOTSTRAP at a running cluster.",
            file=sys.stderr,
        )
        return 1

    feed, training = make_feed(args.records, args.keys, args.partitions)
    trained = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tandem-bench-pipeline-") as scratch:
        detector = train_detector(training, config.model.device, Path(scratch))
    train_s = time.perf_counter() - trained

    made = Resources(options)
    try:
        topic = made.new_topic("pipeline.input", args.partitions)
        prefill_rate = prefill(options, topic, feed)
        log.info("bench_prefilled", topic=topic, records=args.records)
        raw = raw_phase(made.phase_config(config, topic, "raw"), args.records)
        log.info("bench_raw_done", records_per_s=round(raw.rate))
        product = product_phase(made.phase_config(config, topic, "product"), detector, args.records)
        log.info("bench_product_done", records_per_s=round(product.rate))
        raw_rd = product_rd = None
        if not args.no_librdkafka:
            raw_rd = raw_librdkafka_phase(
                made.phase_config(config, topic, "raw-librdkafka"), args.records
            )
            log.info("bench_raw_librdkafka_done", records_per_s=round(raw_rd.rate))
            rd_config = made.phase_config(config, topic, "librdkafka")
            rd_config = rd_config.model_copy(
                update={"kafka": rd_config.kafka.model_copy(update={"client": "librdkafka"})}
            )
            product_rd = product_phase(rd_config, detector, args.records)
            log.info("bench_librdkafka_done", records_per_s=round(product_rd.rate))
        f32 = f32_rd = None
        if not args.no_f32:
            f32_topic = made.new_topic("f32.input", args.partitions)
            prefill(options, f32_topic, make_f32_feed(feed, args.records, args.keys))
            f32_config = made.phase_config(config, f32_topic, "f32")
            f32_config = f32_config.model_copy(
                update={"codec": config.codec.model_copy(update={"format": "f32"})}
            )
            f32 = product_phase(f32_config, detector, args.records)
            log.info("bench_f32_done", records_per_s=round(f32.rate))
            if not args.no_librdkafka:
                f32_rd_config = made.phase_config(f32_config, f32_topic, "f32-librdkafka")
                f32_rd_config = f32_rd_config.model_copy(
                    update={
                        "kafka": f32_rd_config.kafka.model_copy(update={"client": "librdkafka"})
                    }
                )
                f32_rd = product_phase(f32_rd_config, detector, args.records)
                log.info("bench_f32_librdkafka_done", records_per_s=round(f32_rd.rate))
        readings = None
        if not args.no_readings:
            readings_feed = make_readings_feed(args.records, args.keys, args.partitions)
            readings_topic = made.new_topic("readings.input", args.partitions)
            prefill(options, readings_topic, readings_feed)
            readings_config = made.phase_config(config, readings_topic, "readings")
            readings_config = readings_config.model_copy(
                update={"codec": config.codec.model_copy(update={"input": "readings"})}
            )
            readings = product_phase(readings_config, detector, len(readings_feed.values))
            log.info("bench_readings_done", windows_per_s=round(readings.scored_rate))
        latency_topic = made.new_topic("latency.input", args.partitions)
        latency = latency_phase(
            made.phase_config(config, latency_topic, "latency"),
            detector,
            feed,
            args.rate,
            args.latency_s,
        )
    finally:
        made.clean_up()

    ratio = product.rate / raw.rate
    print(
        json.dumps(
            {
                "benchmark": "pipeline",
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "broker": f"{config.kafka.bootstrap}, protocol {info.api_version}",
                "records": args.records,
                "keys": args.keys,
                "partitions": args.partitions,
                "features": WINDOW,
                "codec": "json",
                "calibration": config.calibration.method,
                "prefill_records_per_s": round(prefill_rate),
                "train_s": round(train_s, 2),
                "raw_records_per_s": round(raw.rate),
                "product_records_per_s": round(product.rate),
                "ratio": round(ratio, 3),
                "floor": FLOOR,
                "floor_met": bool(ratio >= FLOOR),
                "raw_polls": raw.batches,
                "product_batches": product.batches,
                "raw_first_batch_s": round(raw.first_batch_s, 2),
                "product_first_batch_s": round(product.first_batch_s, 2),
                "product_seconds": round(product.seconds, 3),
                "product_seconds_by_stage": product.stages,
                "raw_cpu_s": raw.cpu_s,
                "product_cpu_s": product.cpu_s,
                "product_prefetch": config.batch.prefetch,
                "product_alerts": product.alerts,
                **_readings_fields(readings, product),
                **_librdkafka_fields(raw_rd, product_rd, product),
                **_f32_fields(f32, f32_rd),
                "product_dead_letters": product.dead_letters,
                "latency_rate_per_s": args.rate,
                "latency_sent_per_s": round(latency.sent_per_s),
                "latency_records": len(latency.done),
                "latency_p50_ms": latency.percentile("done", 50),
                "latency_p99_ms": latency.percentile("done", 99),
                "latency_max_ms": latency.percentile("done", 100),
                "latency_to_poll_p50_ms": latency.percentile("polled", 50),
                "latency_to_poll_p99_ms": latency.percentile("polled", 99),
                "latency_batches": len(latency.process_ms),
                "latency_process_p50_ms": latency.percentile("process_ms", 50),
                "latency_process_max_ms": latency.percentile("process_ms", 100),
                "batch_max_records": config.batch.max_records,
                "batch_max_wait_ms": config.batch.max_wait_ms,
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
                "backend": keras.backend.backend(),
                "device": select_device(config.model.device).name,
                "wall_s": round(time.perf_counter() - wall, 1),
            }
        )
    )
    return 0


def _librdkafka_fields(raw: Phase | None, daemon: Phase | None, product: Phase) -> dict[str, Any]:
    """The librdkafka phases' figures and ratios (records/s, measured in this run)."""
    if raw is None or daemon is None:
        return {}
    return {
        "raw_librdkafka_records_per_s": round(raw.rate),
        "librdkafka_records_per_s": round(daemon.rate),
        "librdkafka_over_kafka_python": round(daemon.rate / product.rate, 3),
        "librdkafka_over_raw_librdkafka": round(daemon.rate / raw.rate, 3),
        "librdkafka_seconds_by_stage": daemon.stages,
        "librdkafka_cpu_s": daemon.cpu_s,
        "raw_librdkafka_cpu_s": raw.cpu_s,
    }


def _f32_fields(kafka_python: Phase | None, librdkafka: Phase | None) -> dict[str, Any]:
    """The f32 codec's daemon phases (records/s), and librdkafka's over kafka-python's."""
    if kafka_python is None:
        return {}
    fields: dict[str, Any] = {
        "product_f32_records_per_s": round(kafka_python.rate),
        "product_f32_seconds_by_stage": kafka_python.stages,
        "product_f32_dead_letters": kafka_python.dead_letters,
    }
    if librdkafka is not None:
        fields["librdkafka_f32_records_per_s"] = round(librdkafka.rate)
        fields["librdkafka_over_kafka_python_f32"] = round(librdkafka.rate / kafka_python.rate, 3)
        fields["librdkafka_f32_seconds_by_stage"] = librdkafka.stages
    return fields


def _readings_fields(readings: Phase | None, product: Phase) -> dict[str, Any]:
    """The readings phase's figures, and its scored windows/s over the windows phase's."""
    if readings is None:
        return {}
    return {
        "readings_records": readings.records,
        "readings_windows_scored": readings.scored,
        "readings_windows_per_s": round(readings.scored_rate),
        "product_windows_per_s": round(product.scored_rate),
        "readings_over_windows": round(readings.scored_rate / product.scored_rate, 3),
        "readings_floor_met": bool(readings.scored_rate / product.scored_rate >= FLOOR),
        "readings_seconds_by_stage": readings.stages,
        "readings_cpu_s": readings.cpu_s,
    }


if __name__ == "__main__":
    sys.exit(main())
