"""The run loop: one batch from source to commit, in one order, written once.

    decode → score → calibrate → sinks.add (alerts, dead letters) → sinks.flush (acknowledged)
    → checkpoint calibrator state → commit source positions

A position is committed only after everything its batch produced is acknowledged and the
calibrator state that reflects it is saved, so a crash re-delivers at most the uncommitted batch:
its alerts come again with the same ids, and the restored thresholds are those it was judged by.
The daemon, backtests and tests differ only in the source, sinks and checkpoint given here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import structlog

from calibration.base import Calibrator
from detectors.base import Detector
from streamer.alerts import Alert, build_alerts
from streamer.codec import Codec
from streamer.records import SourceRecord

log = structlog.get_logger(__name__)


class Source(Protocol):
    """Batches of records, and a way to mark them done."""

    def poll(self) -> list[SourceRecord]:
        """The next batch (bounded by count and wait time); empty when nothing arrived."""
        ...

    def commit(self, records: Sequence[SourceRecord]) -> None:
        """Mark ``records`` (and everything before them in their partitions) as processed."""
        ...


class Sink(Protocol):
    """Where alerts or dead letters go; ``flush`` returns once every item added is acknowledged."""

    def add(self, items: Sequence[Any]) -> None: ...

    def flush(self) -> None: ...


class Checkpoint(Protocol):
    """Saves calibrator state together with the positions it reflects."""

    def save(self, state: bytes, records: Sequence[SourceRecord]) -> None: ...


@dataclass
class BatchReport:
    """What one batch did: counts, and seconds per stage."""

    records: int = 0
    scored: int = 0
    alerts: int = 0
    dead_letters: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


class Runner:
    """Runs batches through the pipeline (see the module docstring for the order)."""

    def __init__(
        self,
        source: Source,
        codec: Codec,
        detector: Detector,
        calibrator: Calibrator,
        alert_sink: Sink,
        dead_letter_sink: Sink,
        checkpoint: Checkpoint,
        model: Mapping[str, str],
        calibration: Mapping[str, Any],
    ) -> None:
        self.source, self.codec = source, codec
        self.detector, self.calibrator = detector, calibrator
        self.alert_sink, self.dead_letter_sink = alert_sink, dead_letter_sink
        self.checkpoint = checkpoint
        self.model, self.calibration = dict(model), dict(calibration)

    def step(self) -> BatchReport | None:
        """Poll one batch and run it through; None when the source had nothing."""
        records = self.source.poll()
        if not records:
            return None
        return self.process(records)

    def process(self, records: Sequence[SourceRecord]) -> BatchReport:
        """The whole order for one batch; raises (committing nothing) if a sink cannot flush."""
        report = BatchReport(records=len(records))
        clock = partial(_timed, report.seconds)
        with clock("decode"):
            batch, dead = self.codec.decode(records)
        alerts: list[Alert] = []
        if len(batch):
            with clock("score"):
                scores = self.detector.score(batch.windows)
            with clock("calibrate"):
                flags = self.calibrator.update(batch.keys, scores.score)
            with clock("alerts"):
                alerts = build_alerts(
                    batch, scores, flags, self.detector.feature_names, self.model, self.calibration
                )
        with clock("produce"):
            self.alert_sink.add(alerts)
            self.dead_letter_sink.add(dead)
            self.alert_sink.flush()
            self.dead_letter_sink.flush()
        with clock("checkpoint"):
            self.checkpoint.save(self.calibrator.snapshot(), records)
        with clock("commit"):
            self.source.commit(records)
        report.scored, report.alerts, report.dead_letters = len(batch), len(alerts), len(dead)
        log.info(
            "batch_scored",
            records=report.records,
            scored=report.scored,
            alerts=report.alerts,
            dead_letters=report.dead_letters,
            **{f"{stage}_ms": round(s * 1000, 2) for stage, s in report.seconds.items()},
        )
        for letter in dead:
            log.warning(
                "dead_letter",
                source=letter.record.position,
                stage=letter.stage,
                error=letter.reason,
            )
        return report


@contextmanager
def _timed(into: dict[str, float], stage: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        into[stage] = time.perf_counter() - started
