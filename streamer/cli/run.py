"""``tandem run``: the daemon. Consume windows, score, calibrate, alert, commit, until told to stop.

SIGTERM or SIGINT: stop polling, finish the batch in hand (flush, checkpoint, commit), save every
partition's calibrator state, leave the group, exit 0. A second signal exits at once with 130.
A broker that does not answer at start is retried with backoff for ``--broker-wait-s`` seconds
(logged), then the exit status is 3. A broker lost mid-run is waited for
(``streamer.broker.daemon``).
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
from streamer.cli.options import add_config_option, model_bundle
from streamer.config import TandemConfig

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
    from detectors.registry import load_detector
    from streamer.broker.daemon import build_pipeline, run_loop
    from streamer.calibrators import calibrator_description
    from streamer.metrics import Health, Metrics, MetricsServer

    bundle = model_bundle(args.model, config.model.bundle)
    health = Health()
    server: MetricsServer | None = None
    stop = threading.Event()

    def on_signal(number: int, frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("stopping_now", signal=signal.Signals(number).name)
            os._exit(130)
        log.info("stopping", signal=signal.Signals(number).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with structlog.contextvars.bound_contextvars(
            input_topic=config.kafka.input_topic, group=config.kafka.group_id
        ):
            info = wait_for_broker(config.kafka.client_options(), timeout_s=args.broker_wait_s)
            log.info("broker_ready", brokers=info.brokers, protocol=info.api_version)
            detector = load_detector(bundle, device=config.model.device)
            calibrator = calibrator_description(config.calibration)
            metrics = Metrics(detector.name_, detector.version or "unsaved", calibrator["method"])
            if config.metrics.enabled:
                server = MetricsServer(metrics, health, config.metrics.host, config.metrics.port)
                server.start()
            pipeline = build_pipeline(config, detector, name=detector.name_)
            log.info("daemon_started")  # input_topic and group are bound above
            try:
                if not stop.is_set():
                    run_loop(pipeline, metrics, health, stop)
            finally:
                health.mark_not_ready("stopping")
                pipeline.close()
    finally:
        if server is not None:
            server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("daemon_stopped")
    return 0
