"""``tandem run``: the daemon. Consume windows, score, calibrate, alert, commit, until told to stop.

SIGTERM or SIGINT: stop polling, finish the batch in hand (flush, checkpoint, commit), save every
partition's calibrator state, leave the group, exit 0; during start-up, give it up and exit 0.
A second signal exits at once with 130. A broker that does not answer at start is retried with
backoff for ``--broker-wait-s`` seconds (logged), then the exit status is 3. A missing input topic
is waited for, and a broker lost mid-run too (``streamer.broker.daemon``).
Metrics and health are served on ``[metrics].host``/``port`` unless ``[metrics].enabled`` is off;
a port that cannot be bound is a ``ConfigError`` (exit status 2).
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path
from types import FrameType

import structlog

from streamer.broker.admin import wait_for_broker
from streamer.broker.topics import prober
from streamer.cli.options import add_config_option, model_bundle
from streamer.config import TandemConfig
from streamer.errors import StopRequestedError

log = structlog.get_logger(__name__)


def add_run_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    run = commands.add_parser("run", help="the daemon: score the input topic and publish alerts")
    add_config_option(run)
    run.add_argument("--model", type=Path, help="bundle directory (default: [model].bundle)")
    run.add_argument(
        "--broker-wait-s", type=float, default=300.0, help="how long to retry an unreachable broker"
    )
    run.set_defaults(command=run_command)


def run_command(args: argparse.Namespace, config: TandemConfig) -> int:
    bundle = model_bundle(args.model, config.model.bundle)
    stop = threading.Event()

    def on_signal(number: int, frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("stopping_now", signal=signal.Signals(number).name)
            os._exit(130)
        log.info("stopping", signal=signal.Signals(number).name)
        stop.set()

    # Before anything slow: start-up (TensorFlow's import, the model, the broker, the input topic,
    # the group) takes 20-40 s, and a stop request meanwhile must end it with 0 as well, not
    # with the default handler's death by the signal.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with structlog.contextvars.bound_contextvars(
            input_topic=config.kafka.input_topic, group=config.kafka.group_id
        ):
            log.info("daemon_starting", model=str(bundle))
            _run(args, config, bundle, stop)
    except StopRequestedError:
        log.info("start_abandoned", reason="stop requested")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("daemon_stopped")
    return 0


def _run(
    args: argparse.Namespace, config: TandemConfig, bundle: Path, stop: threading.Event
) -> None:
    """Start, then run batches until ``stop`` is set. A stop request during start-up raises
    ``StopRequestedError`` at the next step (the waits for the broker and the input topic notice
    it at once), unwinding what was started."""
    from detectors.registry import load_detector
    from streamer.broker.daemon import (
        build_pipeline,
        run_loop,
        wait_for_input_topic,
        watch_delivery,
    )
    from streamer.broker.models import ModelSwapper, ModelWatch
    from streamer.broker.reachability import Reachability
    from streamer.calibrators import calibrator_description
    from streamer.metrics import Health, Metrics, MetricsServer

    def check_stop() -> None:
        if stop.is_set():
            raise StopRequestedError()

    check_stop()
    # On librdkafka the probe tells a refusal of the credentials from an absent broker: exit 4,
    # not a wait for the broker and exit 3.
    info = wait_for_broker(
        config.kafka.client_options(),
        timeout_s=args.broker_wait_s,
        stop=stop,
        probe=prober(config.kafka),
    )
    log.info("broker_ready", brokers=info.brokers, protocol=info.api_version)
    watch = ModelWatch(bundle, config.model.watch_s)  # before loading: a change meanwhile counts
    detector = load_detector(bundle, device=config.model.device)
    check_stop()
    calibrator = calibrator_description(config.calibration)
    metrics = Metrics(detector.name_, detector.version or "unsaved", calibrator["method"])
    health = Health(stall_s=config.metrics.stall_s)
    server: MetricsServer | None = None
    try:
        if config.metrics.enabled:
            server = MetricsServer(metrics, health, config.metrics.host, config.metrics.port)
            server.start()
        wait_for_input_topic(config, health, stop)
        pipeline = build_pipeline(config, detector, name=detector.name_)
        reachability = Reachability(config.kafka.bootstrap_servers)
        watch_delivery(pipeline, health, stop, reachability)
        try:
            check_stop()
            log.info("daemon_started")  # input_topic and group are bound above
            models = ModelSwapper(watch, config, metrics)
            run_loop(pipeline, metrics, health, stop, models, reachability)
        finally:
            health.mark_not_ready("stopping")
            pipeline.close()
    finally:
        if server is not None:
            server.stop()
