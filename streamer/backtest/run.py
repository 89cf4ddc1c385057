"""Backtests: the daemon's run loop over a finite source, with every window's score kept.

``run_backtest`` builds the same ``Runner`` as ``tandem run`` (decode, score, calibrate, build
alerts, in that order, with the daemon's code), with a finite source (``streamer.backtest.sources``)
and in-memory sinks instead of Kafka, and an observer that keeps each window's score, parts,
threshold and flag for the report. Same records in the same order give the daemon's alerts: the
calibrator's flags do not depend on how the stream is cut into batches (``calibration.window``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import structlog
from numpy.typing import NDArray

from calibration.base import Flags
from detectors.base import Detector, Scores
from streamer.backtest.sweep import SweepResult
from streamer.calibrators import build_calibrator, build_memory, calibrator_description
from streamer.config import AlertsConfig, CalibrationConfig, MemoryConfig
from streamer.events import EventTracker, Judgement
from streamer.ingest.codec import Codec
from streamer.ingest.readings import Windower
from streamer.records import BatchReport, DeadLetter, Partition, SourceRecord, WindowBatch
from streamer.runner import Runner
from streamer.testing import ListSink, NoCheckpoints

log = structlog.get_logger(__name__)

TRACE_COLUMNS = (
    "partition",
    "offset",
    "key",
    "ts",
    "label",
    "score",
    "threshold",
    "surprise",
    "flag",
    "event_id",
)
"""The score trace's columns that are not score parts (a detector's parts never take these
names: ``detectors.fusion`` refuses them as member names)."""


class FiniteSource(Protocol):
    """A ``streamer.runner.Source`` that ends: ``poll`` returns nothing once ``finished``."""

    @property
    def total(self) -> int: ...

    @property
    def finished(self) -> bool: ...

    def poll(self) -> list[SourceRecord]: ...

    def commit(self, records: Sequence[SourceRecord]) -> None: ...

    def rewind(self, records: Sequence[SourceRecord]) -> None: ...

    def seek(self, offsets: Mapping[Partition, int]) -> None: ...


class ScoreTrace:
    """Keeps, for every window scored, its position, key, time, label, score, parts, threshold
    and flag (a ``BatchObserver`` of the run loop)."""

    def __init__(self) -> None:
        self._chunks: list[dict[str, NDArray[Any]]] = []
        """Besides ``TRACE_COLUMNS``, a column per score part (``ae1``, ``ae2``; a fusion's)."""

    def observe(
        self, batch: WindowBatch, scores: Scores, flags: Flags, judgement: Judgement
    ) -> None:
        self._chunks.append(
            {
                "partition": np.fromiter((r.partition for r in batch.records), np.int32),
                "offset": np.fromiter((r.offset for r in batch.records), np.int64),
                "key": batch.keys,
                "ts": batch.ts_ms,
                "label": batch.labels,
                "score": np.asarray(scores.score, np.float64),
                **{name: np.asarray(part, np.float64) for name, part in scores.parts.items()},
                "threshold": flags.thresholds,
                "surprise": np.asarray(flags.surprise, np.float64),
                "flag": flags.flags,
                "event_id": judgement.event_ids.astype(str),
            }
        )

    def frame(self) -> pd.DataFrame:
        """One row per scored window, in the order scored (columns as ``observe`` names them)."""
        if not self._chunks:
            return pd.DataFrame(
                {
                    "partition": np.empty(0, np.int32),
                    "offset": np.empty(0, np.int64),
                    "key": np.empty(0, str),
                    "ts": np.empty(0, np.int64),
                    "label": np.empty(0, np.int8),
                    "score": np.empty(0),
                    "threshold": np.empty(0),
                    "surprise": np.empty(0),
                    "flag": np.empty(0, bool),
                    "event_id": np.empty(0, str),
                }
            )
        return pd.DataFrame(
            {
                name: np.concatenate([chunk[name] for chunk in self._chunks])
                for name in self._chunks[0]
            }
        )


@dataclass
class Backtest:
    """What a backtest saw and did.

    ``windows``: one row per scored window in stream order (``ScoreTrace.frame``: partition,
    offset, key, ts (epoch ms), label (-1 unknown), score, one column per score part, threshold,
    surprise, flag, event_id). ``alerts``: the alert bodies the daemon would have published, in
    order, under ``alerting`` (the ``[alerts]`` section it ran with). ``dead_letters``: the
    records it would have dead-lettered. ``stage_seconds``: run-loop seconds per stage, summed
    over batches; ``seconds``: wall time of the whole run. ``prior``: the (m,) held-out scores
    the calibrator started from (``Detector.held_out_scores``; sweeps start from them too)."""

    source: str
    windows: pd.DataFrame
    alerts: list[Mapping[str, Any]]
    dead_letters: list[DeadLetter]
    records: int
    seconds: float
    stage_seconds: dict[str, float]
    model: dict[str, str]
    calibration: CalibrationConfig
    feature_names: tuple[str, ...]
    alerting: AlertsConfig = field(default_factory=AlertsConfig)
    sweep: list[SweepResult] = field(default_factory=list)
    prior: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))


def run_backtest(
    source: FiniteSource,
    codec: Codec,
    detector: Detector,
    calibration: CalibrationConfig,
    model: Mapping[str, str],
    source_name: str,
    on_batch: Callable[[BatchReport], None] | None = None,
    alerting: AlertsConfig | None = None,
    windower: Windower | None = None,
    remembering: MemoryConfig | None = None,
) -> Backtest:
    """Run every record of ``source`` through the daemon's run loop; ``on_batch`` is told after
    each batch (a progress bar). ``alerting`` is the ``[alerts]`` section (its defaults when
    None: events), ``remembering`` the ``[memory]`` section (its defaults when None: off).
    ``windower``: records are readings, cut into windows as the daemon would."""
    alerting = alerting or AlertsConfig()
    remembering = remembering or MemoryConfig()
    trace = ScoreTrace()
    alerts, dead = ListSink("alerts"), ListSink("dead_letters")
    runner = Runner(
        source,
        codec,
        detector,
        build_calibrator(calibration, detector.held_out_scores),
        alerts,
        dead,
        NoCheckpoints(),
        EventTracker(
            alerting,
            detector.feature_names,
            model=model,
            calibrator=calibrator_description(calibration),
            max_keys=calibration.max_keys,
        ),
        observer=trace,
        windower=windower,
        memory=build_memory(remembering, detector.memory_seed, detector.feature_names),
    )
    stage_seconds: dict[str, float] = {}
    records = 0
    started = time.perf_counter()
    while (report := runner.step()) is not None:
        records += report.records
        for stage, seconds in report.seconds.items():
            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + seconds
        if on_batch is not None:
            on_batch(report)
    seconds = time.perf_counter() - started
    log.info("backtest_done", source=source_name, records=records, alerts=len(alerts.items))
    return Backtest(
        source=source_name,
        windows=trace.frame(),
        alerts=[alert.body for alert in alerts.items],
        dead_letters=list(dead.items),
        records=records,
        seconds=seconds,
        stage_seconds=stage_seconds,
        model=dict(model),
        calibration=calibration,
        feature_names=detector.feature_names,
        alerting=alerting,
        prior=detector.held_out_scores,
    )
