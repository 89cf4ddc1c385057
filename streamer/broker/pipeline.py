"""Building the daemon's parts from configuration: calibrator, topics, and the runner itself."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import structlog
from kafka import KafkaProducer

from calibration.evt import MIN_PEAKS, Dspot, Spot
from calibration.quantile import RollingQuantile
from calibration.window import WindowCalibrator
from detectors.base import Detector
from streamer.broker.admin import TopicSpec, create_topics
from streamer.broker.prefetch import PrefetchingSource
from streamer.broker.sinks import AlertSink, DeadLetterSink, KafkaStateStore, make_producer
from streamer.broker.sources import KafkaSource
from streamer.broker.transactions import Transaction
from streamer.checkpoints import PartitionCheckpoints
from streamer.codec import Limits, make_codec
from streamer.config import CalibrationConfig, TandemConfig
from streamer.runner import Runner

log = structlog.get_logger(__name__)


def build_calibrator(config: CalibrationConfig) -> WindowCalibrator:
    """The calibrator ``[calibration]`` asks for. A SPOT or DSPOT warm-up too short to hold
    ``MIN_PEAKS`` scores over ``init_level`` is warned about: the first threshold then comes
    only once that many have been accepted, later than ``warmup`` says."""
    peaks = config.warmup * (1 - config.init_level)
    if config.method != "quantile" and peaks < MIN_PEAKS - 1e-9:
        log.warning(
            "calibration_warmup_short",
            warmup=config.warmup,
            init_level=config.init_level,
            peaks=round(peaks, 1),
            first_threshold_after=math.ceil(MIN_PEAKS / (1 - config.init_level) - 1e-9),
        )
    shared: dict[str, Any] = {
        "window": config.window,
        "warmup": config.warmup,
        "refresh": config.refresh,
        "per_key": config.per_key,
    }
    if config.method == "quantile":
        return RollingQuantile(config.quantile, **shared)
    evt = {"target_rate": config.target_rate, "init_level": config.init_level, **shared}
    if config.method == "spot":
        return Spot(**evt)
    return Dspot(depth=config.depth, **evt)


def calibrator_description(config: CalibrationConfig) -> dict[str, Any]:
    """The ``calibrator`` object of an alert."""
    if config.method == "quantile":
        return {"method": "quantile", "quantile": config.quantile}
    return {"method": config.method, "target_rate": config.target_rate}


def ensure_topics(config: TandemConfig, partitions: int = 1) -> None:
    """Create the alerts, dead-letter and state topics if they are missing.

    The state topic is compacted (only the newest checkpoint chunk per key is kept) with short
    segments, so compaction can run within minutes and restoring reads little besides the latest
    checkpoints.
    """
    kafka = config.kafka
    state_configs = {
        "cleanup.policy": "compact",
        "segment.ms": "600000",
        "min.cleanable.dirty.ratio": "0.1",
    }
    create_topics(
        kafka.client_options(),
        [
            TopicSpec(kafka.alerts_topic, partitions),
            TopicSpec(kafka.dead_letter_topic, partitions),
            TopicSpec(kafka.state_topic, 1, configs=state_configs),
        ],
    )


@dataclass
class Pipeline:
    """The daemon's parts: the run loop, its Kafka source and the producer its sinks share."""

    runner: Runner
    source: KafkaSource | PrefetchingSource
    producer: KafkaProducer

    def close(self, timeout_s: float = 10.0) -> None:
        """Save every partition's calibrator state, leave the group, flush and close the
        producer. A broker that is gone makes the save fail: that is logged, and the next owner
        resumes from the previous checkpoint."""
        try:
            self.runner.close()
        except Exception as error:
            log.warning("final_checkpoint_failed", error=repr(error))
        self.source.close()
        self.producer.close(timeout=timeout_s)


def build_pipeline(config: TandemConfig, detector: Detector, name: str) -> Pipeline:
    """A runner reading the input topic in the group; each partition's calibrator state is
    restored from its last checkpoint when the partition is assigned."""
    ensure_topics(config)
    producer = make_producer(config.kafka)
    transaction = Transaction(producer) if config.kafka.transactional else None
    source: KafkaSource | PrefetchingSource
    if config.batch.prefetch:
        source = PrefetchingSource(config.kafka, config.batch, config.log, transaction=transaction)
    else:
        source = KafkaSource(config.kafka, config.batch, transaction=transaction)
    codec = make_codec(
        config.codec.format,
        Limits(detector.window_length, config.codec.max_abs_value, config.codec.max_record_bytes),
    )
    checkpoints = PartitionCheckpoints(
        KafkaStateStore(producer, config.kafka, transaction),
        config.calibration.checkpoint_interval_s,
    )
    runner = Runner(
        source,
        codec,
        detector,
        build_calibrator(config.calibration),
        AlertSink(producer, config.kafka.alerts_topic, transaction),
        DeadLetterSink(producer, config.kafka.dead_letter_topic, transaction),
        checkpoints,
        model={"name": name, "version": detector.version or "unsaved"},
        calibration=calibrator_description(config.calibration),
    )
    source.listener = runner
    return Pipeline(runner, source, producer)
