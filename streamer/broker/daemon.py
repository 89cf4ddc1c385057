"""The daemon's loop around the runner: keep going through broker trouble, report health.

A failed batch (the broker stopped acknowledging, a commit timed out) is not fatal: the runner
keeps it uncommitted (see ``Runner.process``), the loop backs off (0.5 s doubling to 30 s) and
tries again, and readiness reports the outage until a batch goes through. Only a stop request,
or the death of the fetch process (``FetchProcessError``), ends the loop.
"""

from __future__ import annotations

import threading

import structlog

from streamer.broker.pipeline import Pipeline
from streamer.errors import FetchProcessError
from streamer.metrics import Health, Metrics

log = structlog.get_logger(__name__)

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0


def run_loop(pipeline: Pipeline, metrics: Metrics, health: Health, stop: threading.Event) -> None:
    """Run batches until ``stop`` is set; then return (the caller closes the pipeline)."""
    runner, source = pipeline.runner, pipeline.source
    backoff = FIRST_BACKOFF_S
    failures = 0
    while not stop.is_set():
        health.beat()
        try:
            report = runner.step()
        except FetchProcessError:
            raise  # not broker trouble: the daemon cannot read any more
        except Exception as error:
            failures += 1
            metrics.count_delivery_failure()
            health.mark_not_ready(f"batch failed: {error!r}")
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
        health.mark_ready("consuming")
        if report is not None:
            metrics.observe_batch(report)
            if report.checkpointed:
                metrics.count_checkpoint()
        metrics.set_lag(source.lag())
        metrics.set_threshold(runner.calibrator.threshold())
