"""The daemon: its parts built from configuration (topics, producer, source, sinks, checkpoints,
runner), and the loop around the runner that keeps going through broker trouble and reports health.

A failed batch (the broker stopped acknowledging, a commit timed out) is not fatal: the runner
keeps it uncommitted (see ``Runner.process``), the loop backs off (0.5 s doubling to 30 s) and
tries again, and readiness reports the outage until a batch goes through. Only a stop request,
or a fetch process that keeps dying (``FetchProcessError``: it is restarted up to five times in
ten minutes), ends the loop. Before it, a missing input topic is waited for
(``wait_for_input_topic``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import structlog
from kafka.errors import KafkaError

from detectors.base import Detector
from streamer.broker.admin import TopicSpec
from streamer.broker.models import ModelSwapper
from streamer.broker.prefetch import PrefetchingSource
from streamer.broker.reachability import Reachability
from streamer.broker.sinks import AlertSink, DeadLetterSink, make_producer
from streamer.broker.sources import KafkaSource
from streamer.broker.state_store import KafkaStateStore
from streamer.broker.topics import create_topics, topic_checker
from streamer.broker.transactions import Transaction, transactional_id
from streamer.broker.waits import DeliveryWait
from streamer.calibrators import build_calibrator, build_memory, calibrator_description
from streamer.checkpoints import PartitionCheckpoints
from streamer.config import TandemConfig
from streamer.errors import BrokerUnavailableError, FetchProcessError, StopRequestedError
from streamer.events import EventTracker
from streamer.ingest.build import build_input
from streamer.metrics import Health, Metrics
from streamer.runner import Runner

if TYPE_CHECKING:  # confluent-kafka is an extra: imported only when configured
    from streamer.broker.librdkafka import RdkafkaSource

    Source: TypeAlias = KafkaSource | PrefetchingSource | RdkafkaSource

log = structlog.get_logger(__name__)

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
STOP_WAIT_S = 10.0
"""How long a wait for acknowledgements goes on once a stop is requested (as long as the final
checkpoint is given: ``Pipeline.close``)."""


TOPIC_POLL_S = 1.0
TOPIC_LOG_EVERY_S = 30.0


def wait_for_input_topic(config: TandemConfig, health: Health, stop: threading.Event) -> None:
    """Return once ``[kafka].input_topic`` exists; raise ``StopRequestedError`` if ``stop`` is
    set first.

    A missing input topic is usually one not created yet (a new feed, a deployment order), and
    exiting would only make a supervisor restart the daemon in a loop. So it waits: asks every
    ``TOPIC_POLL_S``, logs ``input_topic_missing`` (with how long it has waited) at once and
    every ``TOPIC_LOG_EVERY_S``, gives that as ``/health/ready``'s reason, and keeps
    ``/health/live`` up, since waiting is what it should be doing.
    """
    topic = config.kafka.input_topic
    started = time.monotonic()
    logged_at: float | None = None
    with topic_checker(config.kafka) as exists:
        while not stop.is_set():
            try:
                if exists(topic):
                    if logged_at is not None:
                        log.info("input_topic_found", waited_s=round(time.monotonic() - started))
                    return
                error = None
            except (KafkaError, BrokerUnavailableError) as raised:  # the broker went away
                error = repr(raised)  # ask again
            health.beat()
            health.mark_not_ready(f"input topic {topic!r} does not exist (or is not visible)")
            now = time.monotonic()
            if logged_at is None or now - logged_at >= TOPIC_LOG_EVERY_S:
                waited_s = round(now - started)
                why = {"error": error} if error else {}
                log.warning("input_topic_missing", topic=topic, waited_s=waited_s, **why)
                logged_at = now
            stop.wait(TOPIC_POLL_S)
    raise StopRequestedError()


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
    specs = [
        TopicSpec(kafka.alerts_topic, partitions),
        TopicSpec(kafka.dead_letter_topic, partitions),
        TopicSpec(kafka.state_topic, 1, configs=state_configs),
    ]
    create_topics(kafka, specs)


@dataclass
class Pipeline:
    """The daemon's parts: the run loop, its Kafka source and the producer its sinks share."""

    runner: Runner
    source: Source
    producer: Any
    """kafka-python's ``KafkaProducer``, or ``RdkafkaProducer``."""
    wait: DeliveryWait
    """How its sinks wait for acknowledgements (``watch_delivery``; bounded while closing)."""

    def close(self, timeout_s: float = 10.0) -> None:
        """Save every partition's calibrator state, leave the group, flush and close the
        producer. A broker that is gone makes the save fail after ``timeout_s``: that is
        logged, later flushes give up after one slice, and the next owner resumes from the
        previous checkpoint (nothing unacknowledged was committed)."""
        self.wait.limit_s = timeout_s
        steps: tuple[tuple[str, Callable[[], None]], ...] = (
            ("final_checkpoint_failed", self.runner.close),
            ("source_close_failed", self.source.close),  # its revocation saves state again
        )
        for failed, step in steps:
            try:
                step()
            except Exception as error:
                log.warning(failed, error=repr(error))
                self.wait.limit_s = 0.0
        gone = self.wait.limit_s == 0.0
        try:
            self.producer.close(timeout=1.0 if gone else timeout_s)
        except KafkaError as error:  # KafkaTimeoutError: records the broker never acknowledged
            log.warning("producer_close_failed", error=repr(error))
            # kafka-python's close stops at its failed flush and never closes (its finaliser
            # then tries again at exit); its sender can drop what is left, uncommitted anyway.
            sender = getattr(self.producer, "_sender", None)
            if sender is not None:
                sender.force_close()
            try:
                self.producer.close(timeout=1.0)
            except KafkaError as again:
                log.warning("producer_close_failed", error=repr(again))


def _client(config: TandemConfig, wait: DeliveryWait) -> tuple[Any, Source, Transaction | None]:
    """The producer, source and transaction (if exactly-once, waiting on the broker through
    ``wait``) of ``[kafka].client``: librdkafka's (no fetch process: it parses in C threads) or
    kafka-python's (polling ahead in a fetch process when ``[batch].prefetch``)."""
    if config.kafka.client == "librdkafka":
        from streamer.broker.librdkafka import RdkafkaProducer, RdkafkaSource

        exactly_once = config.kafka.transactional
        rdkafka = RdkafkaProducer(
            config.kafka, transactional_id(config.kafka) if exactly_once else None
        )
        transaction = Transaction(rdkafka, wait) if exactly_once else None
        rdsource = RdkafkaSource(config.kafka, config.batch, transaction=transaction)
        return rdkafka, rdsource, transaction
    producer = make_producer(config.kafka)
    transaction = Transaction(producer, wait) if config.kafka.transactional else None
    source: Source
    if config.batch.prefetch:
        source = PrefetchingSource(config.kafka, config.batch, config.log, transaction=transaction)
    else:
        source = KafkaSource(config.kafka, config.batch, transaction=transaction)
    return producer, source, transaction


def build_pipeline(config: TandemConfig, detector: Detector, name: str) -> Pipeline:
    """A runner reading the input topic in the group; each partition's calibrator state is
    restored from its last checkpoint when the partition is assigned."""
    ensure_topics(config)
    wait = DeliveryWait()
    producer, source, transaction = _client(config, wait)
    codec, windower = build_input(detector.feature_names, config)
    checkpoints = PartitionCheckpoints(
        KafkaStateStore(producer, config.kafka, transaction, wait=wait),
        config.calibration.checkpoint_interval_s,
    )
    runner = Runner(
        source,
        codec,
        detector,
        build_calibrator(config.calibration, detector.held_out_scores),
        AlertSink(producer, config.kafka.alerts_topic, transaction, wait),
        DeadLetterSink(producer, config.kafka.dead_letter_topic, transaction, wait),
        checkpoints,
        EventTracker(
            config.alerts,
            detector.feature_names,
            model={"name": name, "version": detector.version or "unsaved"},
            calibrator=calibrator_description(config.calibration),
            max_keys=config.calibration.max_keys,
        ),
        windower=windower,
        memory=build_memory(config.memory, detector.memory_seed, detector.feature_names),
    )
    source.listener = runner
    return Pipeline(runner, source, producer, wait)


def watch_delivery(
    pipeline: Pipeline,
    health: Health,
    stop: threading.Event | None = None,
    reachability: Reachability | None = None,
) -> None:
    """While the pipeline waits for the broker to acknowledge a batch's output, or for its
    fetch process to answer (in an outage, it spends a request timeout on each commit), keep
    ``/health/live`` up (both waits are bounded: the producer's delivery timeout, the fetch
    process's ``answer_within_s``) and ``/health/ready`` down with how long it has waited, and
    "broker unreachable" first when ``reachability`` finds no bootstrap server. Once ``stop``
    is set, a wait for acknowledgements gives up after ``STOP_WAIT_S`` (the batch stays
    uncommitted, so nothing is lost): a stop in an outage otherwise waited out the producer's
    delivery timeout, 120 s from the batch."""

    def waiting_for(what: str, delivery: bool) -> Callable[[float], None]:
        def waiting(waited_s: float) -> None:
            health.beat()
            unreachable = reachability is not None and not reachability.check()
            reason = f"waiting for {what} ({waited_s:.0f} s)"
            health.mark_not_ready(_reason(reachability, reason) if unreachable else reason)
            if delivery and stop is not None and stop.is_set():
                limit = pipeline.wait.limit_s
                pipeline.wait.limit_s = min(limit, STOP_WAIT_S) if limit else STOP_WAIT_S

        return waiting

    pipeline.wait.on_wait = waiting_for("the broker to acknowledge output", delivery=True)
    if isinstance(pipeline.source, PrefetchingSource):
        pipeline.source.on_wait = waiting_for("the fetch process", delivery=False)


def run_loop(
    pipeline: Pipeline,
    metrics: Metrics,
    health: Health,
    stop: threading.Event,
    models: ModelSwapper | None = None,
    reachability: Reachability | None = None,
) -> None:
    """Run batches until ``stop`` is set; then return (the caller closes the pipeline). Between
    batches, ``models`` swaps in a new model when one is rolled out. While no batch goes
    through, ``reachability`` tells an outage from a quiet topic: readiness then says "broker
    unreachable" (liveness stays up: waiting is what the loop should be doing)."""
    runner, source = pipeline.runner, pipeline.source
    backoff = FIRST_BACKOFF_S
    failures = evicted = 0
    while not stop.is_set():
        health.beat()
        try:
            report = runner.step()
        except FetchProcessError:
            raise  # its restarts used up (``PrefetchingSource._restart``): cannot read any more
        except Exception as error:
            failures += 1
            metrics.count_delivery_failure()
            unreachable = reachability is not None and not reachability.check(force=True)
            failed = f"batch failed: {error!r}"
            health.mark_not_ready(_reason(reachability, failed) if unreachable else failed)
            log.error(
                "batch_failed",
                error=repr(error),
                failures=failures,
                retry_in_s=backoff,
                pending=runner.pending is not None,
            )
            stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            continue
        if failures:
            log.info("batch_recovered", after_failures=failures)
        failures, backoff = 0, FIRST_BACKOFF_S
        if reachability is not None and report is None and not reachability.check():
            health.mark_not_ready(_reason(reachability))
        else:
            if reachability is not None and report is not None:
                reachability.saw_broker()
            health.mark_ready("consuming")
        if models is not None:
            models.poll(runner)
        if report is not None:
            metrics.observe_batch(report)
            if report.checkpointed:
                metrics.count_checkpoint()
        metrics.set_lag(source.lag())
        metrics.set_threshold(runner.calibrator.threshold())
        if isinstance(source, PrefetchingSource):
            metrics.count_fetch_restarts(source.restarted)
        if runner.calibrator.evicted > evicted:
            log.warning(
                "keys_evicted",
                keys=runner.calibrator.evicted - evicted,
                total=runner.calibrator.evicted,
                max_keys=runner.calibrator.max_keys,
            )
            evicted = runner.calibrator.evicted
            metrics.count_evictions(evicted)
        metrics.count_evictions(runner.events.dropped, "events")
        if runner.windower is not None:
            metrics.count_evictions(runner.windower.dropped, "readings")
        if runner.memory is not None:
            metrics.count_evictions(runner.memory.evicted, "memory")


def _reason(reachability: Reachability | None, then: str = "") -> str:
    """Readiness's reason in an outage, followed by ``then`` (what failed or is waited for)."""
    servers = reachability.describe() if reachability is not None else "?"
    unreachable = f"broker unreachable (no connection to {servers})"
    return f"{unreachable}; {then}" if then else unreachable
