"""Detection quality on labelled public series (NAB, SKAB): tandem beside two peers, as JSON.

Per series, every method sees the same sliding windows (``--window`` steps of every channel,
stride 1, stamped with their last step: ``streamer.ingest.tables.windows_from_frame``) and the
same labels (a window is anomalous when it holds a labelled step):

- ``tandem``: a small cascade (``cascade_spec``) trained on the series' leading normal part, then
  the whole series backtested through the daemon's run loop (``run_backtest`` over a
  ``FileSource``, JSON codec, SPOT); the training part warms the calibrator up. Operating points:
  ``events``, the alerts as emitted: each alert event's first window (``[alerts]`` defaults over
  SPOT at ``--target-rate``; NAB scores these as the detections); ``event_spans``, each event
  from its first to its last flagged window (the events' point-wise view, for SKAB's metrics);
  ``defaults``, the events the built-in ``[calibration]`` and ``[alerts]`` make of the same
  scores (what a user who sets nothing gets); ``spot_default``, every flagged window
  (``--target-rate``); ``spot_tuned``, one target rate for the whole corpus, the
  best of a ``run_sweep`` over ``--sweep-rates`` (by NAB score on NAB, by pooled event F1 on SKAB:
  chosen on the test labels, as NAB's own optimiser chooses its threshold); ``dspot_default``,
  the same scores recalibrated by DSPOT (drifting baselines); ``likelihood_events``,
  ``likelihood_event_spans`` and ``likelihood_windows``, the same scores recalibrated by
  ``method = "likelihood"`` (``calibration.likelihood``), seen as events, event spans and
  windows; and on NAB ``raw_nab_best``, NAB's
  ``best_threshold`` on the score itself (tail decades).
- ``river_hst``: River's ``HalfSpaceTrees`` behind a ``MinMaxScaler`` in a ``QuantileFilter``
  (River's documented set-up; the filter keeps HST from learning the windows it flags). It learns
  the training part, then scores, classifies and learns each later window in order. ``q95``: the
  filter's own flags (``--river-q``); ``same_rate``: each file's HST scores on the evaluated part
  cut to flag exactly as many windows as ``tandem/spot_default`` flags there.
- ``pyod_iforest``: PyOD's ``IForest`` fitted on the training windows; ``default``: its
  ``predict`` (threshold from ``contamination`` 0.1); ``same_rate`` as for HST.

The ``same_rate`` peers pick their per-file cut knowing the whole evaluated part's scores (an
oracle no online detector has), so that comparison flatters the peers. On NAB every continuous
score also goes through ``best_threshold`` (``*/raw_nab_best``, one threshold for all files, as
NAB scores its published detectors): tandem's tail decades are meant to mean the same in every
file, HST's and IForest's scores are per-file scales.

Protocols. NAB: each file in time order; train on NAB's probationary period (the first
``min(floor(0.15 n), 750)`` rows, ``streamer.backtest.nab.probation_rows``; no label there); NAB
scores the file's own rows (a row's detection is the flag of the window ending on it; the first
``window - 1`` rows, all probationary, have none). ``nab_standard_onsets`` counts only each alarm
run's first window as a detection (an operator's one alert per run; NAB charges every detection
outside a window). SKAB (``valve1``): train on the first 400 rows of each experiment, as the
published notebooks do (``anomaly-free.csv`` is not used). Metrics cover the windows ending after
the training rows, for every method alike.

Cascade: AE1 D → 2L → L with L = 3D/8 (at most 16), AE2 L → 2K → K with K = L/4 (at least 2),
30 epochs (early stopping), batches of 32 (training parts hold 250 to 750 windows). Scaler:
``robust`` on NAB; ``standard`` on SKAB, whose Volume Flow RateRMS channel barely moves in
training (interquartile range 0.001, steps of 1.0), so robust scaling sends it to 1,000s and
its loss swamps the rest. Calibration per series: SPOT's warm-up is the training windows rounded
down to whole refresh blocks of 64 (a threshold is in force from the first evaluated window), its
window 10,000, its initial level ``min(0.98, 1 - 12 / warmup)`` so the warm-up holds 12 peaks
(SPOT fits nothing below 10). Each key's memory of normal windows is on (``--memory``), as the
README's rule turns it on for series whose training part is short beside the patterns they go
through: 15 % of a NAB file, SKAB's first 400 rows. Seeds fixed (cascade, HST, IForest).

Aggregates (``rows``) pool counts over files: each file is one key of one ``evaluate`` call, so
event recall is events detected / events, event precision events detected / (events detected +
false alarm runs) (``streamer.backtest.events``: an alarm flickering inside an event counts once),
point precision and recall pool windows, false alarms per 10k pool normal windows, the median
delay pools detected events; ``mean_file_event_f1`` averages the files holding an event.
``point_f1_rows`` is point-wise F1 over the evaluated rows with the files' own row labels (SKAB's
published F1), ``far_rows`` and ``mar_rows`` SKAB's false and missed alarm rates over the same
rows. ``per_file`` gives each file's counts per method. ``--nab-export DIR`` writes NAB's results
layout (``export_nab``) so NAB's own scorer can check the numbers.

Published, for comparison: NAB standard profile on these 28 files, ARTime 76.2, Numenta HTM 65.8,
Random Cut Forest 44.2, Windowed Gaussian 33.9; SKAB point F1, Conv-AE 0.78, MSET 0.78, PCA 0.76,
LSTM-AE 0.74, Vanilla AE 0.39, Isolation Forest 0.29.

Data are read from ``--data DIR`` (a folder holding ``nab/`` and ``skab/``; by default
``shared/data`` beside the repository), never copied.
Progress goes to stderr (structlog, one ``file_done`` per file), the JSON alone to stdout (and to
``--out``). About 8 minutes for NAB and 4 for SKAB on 2 cores, nearly all of it training.
Usage: .venv/bin/python bench/eval_detection.py [--datasets nab,skab] [--limit N] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pandas as pd
import structlog
from numpy.typing import NDArray

from detectors.spec import AutoencoderSpec, CascadeSpec
from streamer.backtest.events import evaluate
from streamer.backtest.labels import labels_from_ranges
from streamer.backtest.nab import (
    STANDARD,
    NabFileScore,
    best_threshold,
    nab_file_score,
    normalised_score,
    probation_rows,
)
from streamer.config import CalibrationConfig, MemoryConfig, TandemConfig
from streamer.errors import NabError
from streamer.ingest.tables import WindowTable, windows_from_frame
from streamer.logging import configure_logging

log = structlog.get_logger("bench.eval_detection")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_WINDOW = {"nab": 16, "skab": 10}
SCALER = {"nab": "robust", "skab": "standard"}
SKAB_TRAIN_ROWS = 400
SWEEP_RATES = (1e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2)
SEED = 0
PUBLISHED = {
    "nab": {
        "metric": "NAB standard profile, these 28 files",
        "ARTime": 76.2,
        "Numenta HTM": 65.8,
        "Random Cut Forest": 44.2,
        "Windowed Gaussian": 33.9,
    },
    "skab": {
        "metric": "point-wise F1, valve1 experiments",
        "Conv-AE": 0.78,
        "MSET": 0.78,
        "PCA": 0.76,
        "LSTM-AE": 0.74,
        "Vanilla AE": 0.39,
        "Isolation Forest": 0.29,
    },
}


@dataclass(frozen=True)
class Series:
    """One labelled series: ``frame`` one row per step (``ts`` epoch ms, ``label`` 0/1, then the
    channels), ``train_rows`` leading rows to train on, and NAB's ``spans`` (start, end) epoch ms
    (None outside NAB)."""

    name: str
    frame: pd.DataFrame
    train_rows: int
    spans: list[tuple[int, int]] | None = None


@dataclass
class SeriesRun:
    """What every method did on one series: window arrays (m,) over all ``m`` windows (``flags``
    and ``scores`` by method name), ``evaluated`` (m,) marks the windows ending after training;
    ``row_ts``, ``row_labels`` and ``row_values`` (n,) are the file's own rows (the values: its
    first channel)."""

    name: str
    dataset: str
    window: int
    keys: NDArray[np.str_]
    ts_ms: NDArray[np.int64]
    labels: NDArray[np.int8]
    evaluated: NDArray[np.bool_]
    row_ts: NDArray[np.int64]
    row_labels: NDArray[np.int8]
    row_values: NDArray[np.float64]
    train_rows: int
    spans: list[tuple[int, int]] | None
    flags: dict[str, NDArray[np.bool_]] = field(default_factory=dict)
    scores: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    sweep: dict[float, NDArray[np.bool_]] = field(default_factory=dict)
    sweep_events: dict[float, NDArray[np.bool_]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    def rows_of(self, values: NDArray[Any], fill: Any) -> NDArray[Any]:
        """Window values (m,) on the file's rows (n,): row r gets the window ending on it; the
        first ``window - 1`` rows get ``fill``."""
        out = np.full(len(self.row_ts), fill, dtype=values.dtype)
        out[self.window - 1 :] = values
        return out


# Loading ------------------------------------------------------------------------------------


def nab_series(root: Path) -> Iterator[Series]:
    """NAB's files (``root``/nab, sorted by name) with their labelled windows as row labels."""
    base = root / "nab"
    windows = json.loads((base / "combined_windows.json").read_text())
    for name in sorted(windows):
        raw = pd.read_csv(base / name)
        ts = _monotonic(_epoch_ms(raw["timestamp"]), name)
        bounds = [
            _epoch_ms(pd.Series([pair[i] for pair in windows[name]], dtype=str)) for i in (0, 1)
        ]
        spans = list(zip(bounds[0].tolist(), bounds[1].tolist(), strict=True))
        ranges = pd.DataFrame(
            {
                "key": pd.Series([None] * len(spans), dtype=object),
                "start_ms": pd.Series([s for s, _ in spans], dtype=np.int64),
                "end_ms": pd.Series([e for _, e in spans], dtype=np.int64),
            }
        )
        labels = labels_from_ranges(np.full(len(ts), "default"), ts, ranges)
        frame = pd.DataFrame({"ts": ts, "label": labels, "value": raw["value"].astype(float)})
        yield Series(name, frame, math.ceil(probation_rows(len(frame))), spans)


def skab_series(root: Path) -> Iterator[Series]:
    """SKAB's valve1 experiments (``root``/skab/valve1, in numeric order)."""
    base = root / "skab" / "valve1"
    for path in sorted(base.glob("*.csv"), key=lambda p: int(p.stem)):
        raw = pd.read_csv(path, sep=";")
        channels = raw.drop(columns=["datetime", "anomaly", "changepoint"]).astype(float)
        frame = pd.DataFrame(
            {
                "ts": _monotonic(_epoch_ms(raw["datetime"]), f"valve1/{path.name}"),
                "label": raw["anomaly"].astype(np.int8),
            }
        )
        frame = pd.concat([frame, channels], axis=1)
        yield Series(f"valve1/{path.name}", frame, SKAB_TRAIN_ROWS)


def _monotonic(ts_ms: NDArray[np.int64], name: str) -> NDArray[np.int64]:
    """``ts_ms`` (n,) with rows whose clock stepped back stamped with the latest time so far:
    windows are put in time order and NAB scores rows in time order, so file order must be it.
    (NAB's machine_temperature_system_failure.csv steps back 55 minutes at row 10149.)"""
    repaired = np.maximum.accumulate(ts_ms)
    changed = int((repaired != ts_ms).sum())
    if changed:
        log.warning("clock_stepped_back", file=name, rows_restamped=changed)
    return repaired


def _epoch_ms(column: pd.Series) -> NDArray[np.int64]:
    stamps = pd.to_datetime(column, utc=True, format="ISO8601")
    return np.asarray(stamps.dt.as_unit("ms").astype("int64").to_numpy(), dtype=np.int64)


# Methods ------------------------------------------------------------------------------------


def cascade_spec(width: int, epochs: int, scaler: str) -> CascadeSpec:
    """A cascade sized for ``width`` features: AE1 width → 2L → L with L = 3/8 of the width (at
    most 16), AE2 L → 2K → K with K = L / 4 (at least 2); small batches, as the training parts
    hold a few hundred windows."""
    latent = min(16, max(4, width * 3 // 8))
    inner = max(2, latent // 4)
    return CascadeSpec.model_validate(
        {
            **TandemConfig().train.model_dump(),
            "ae1": AutoencoderSpec(hidden=(min(32, 2 * latent),), latent=latent),
            "ae2": AutoencoderSpec(hidden=(2 * inner,), latent=inner),
            "epochs": epochs,
            "batch_size": 32,
            "scaler": scaler,
            "seed": SEED,
        }
    )


def calibration_for(target_rate: float) -> CalibrationConfig:
    """The built-in ``[calibration]`` (``configs/default.toml``) at ``target_rate``: SPOT, each
    key started from the model's held-out scores (module docstring)."""
    return CalibrationConfig.model_validate(
        {**TandemConfig().calibration.model_dump(), "target_rate": target_rate}
    )


def run_tandem(
    run: SeriesRun, table: WindowTable, train: NDArray[np.bool_], args: argparse.Namespace
) -> None:
    """Train the cascade on ``train`` windows, backtest all of ``table``, sweep the rates."""
    import keras

    from detectors.cascade import CascadeDetector
    from streamer.backtest.run import run_backtest
    from streamer.backtest.sources import FileSource
    from streamer.backtest.sweep import SweepSetting, parse_sweep, run_sweep
    from streamer.ingest.codec import JsonCodec, Limits

    started = time.perf_counter()
    spec = cascade_spec(table.windows.shape[1], args.epochs, SCALER[run.dataset])
    detector = CascadeDetector(spec, feature_names=table.feature_names, device="cpu")
    detector.fit(table.windows[train])
    summary = detector.training_summary_
    run.training = {
        "windows": summary["windows"],
        "epochs_run": [summary[part]["epochs_run"] for part in ("ae1", "ae2")],
        "held_out_score_p99": round(summary["held_out_quantiles"]["score"]["p99"], 3),
    }
    run.seconds["tandem_train"] = time.perf_counter() - started
    started = time.perf_counter()
    calibration = calibration_for(args.target_rate)
    codec = JsonCodec(Limits(table.windows.shape[1]))
    backtest = run_backtest(
        FileSource(table, codec, run.name, 4096),
        codec,
        detector,
        calibration,
        {"name": "eval_detection", "version": "unsaved"},
        run.name,
        remembering=MemoryConfig(enabled=args.memory == "on"),
    )
    windows = backtest.windows
    offsets = windows["offset"].to_numpy()
    if len(windows) != len(table) or not np.array_equal(offsets, np.arange(len(table))):
        raise RuntimeError(
            f"{run.name}: the backtest scored {len(windows)} of {len(table)} windows"
            f" ({len(backtest.dead_letters)} dead letters); every window must be scored in order"
        )
    windows["label"] = table.labels[offsets]
    run.scores["tandem"] = windows["score"].to_numpy(dtype=np.float64)
    run.flags["tandem/spot_default"] = windows["flag"].to_numpy(dtype=bool)
    run.flags["tandem/events"] = opened_windows(backtest.alerts, len(table))
    run.flags["tandem/event_spans"] = event_spans(windows)
    run.flags["tandem/events_warmup"] = events_after_warmup(windows, calibration)
    rates = ",".join(f"{rate:g}" for rate in args.sweep_rates)
    settings = parse_sweep(f"calibration.target_rate={rates}", calibration)
    for result in run_sweep(windows, settings, backtest.prior):
        rate = result.setting.calibration.target_rate
        run.sweep[rate] = result.flags.flags
        run.sweep_events[rate] = event_openings(windows["key"].to_numpy(), result.flags.flags)
    dspot = CalibrationConfig.model_validate({**calibration.model_dump(), "method": "dspot"})
    (result,) = run_sweep(windows, [SweepSetting("method=dspot", dspot)], backtest.prior)
    run.flags["tandem/dspot_default"] = result.flags.flags
    likelihood = CalibrationConfig.model_validate(
        {**calibration.model_dump(), "method": "likelihood"}
    )
    (result,) = run_sweep(windows, [SweepSetting("method=likelihood", likelihood)], backtest.prior)
    keys = windows["key"].to_numpy()
    run.flags["tandem/likelihood_events"] = event_openings(keys, result.flags.flags)
    run.flags["tandem/likelihood_event_spans"] = flagged_spans(keys, result.flags.flags)
    run.flags["tandem/likelihood_windows"] = result.flags.flags
    run.seconds["tandem_backtest"] = time.perf_counter() - started
    keras.backend.clear_session()


def opened_windows(alerts: Sequence[Mapping[str, Any]], windows: int) -> NDArray[np.bool_]:
    """(windows,) True at each alert event's first window: the alerts a user is paged with in
    the default ``[alerts]`` mode (an event's updates and close tell of one already opened)."""
    flags = np.zeros(windows, dtype=bool)
    for alert in alerts:
        if alert["type"] == "opened":
            flags[int(alert["source"]["offset"])] = True
    return flags


def event_spans(windows: pd.DataFrame) -> NDArray[np.bool_]:
    """(m,) True from each alert event's first window to its last flagged one: the stretch an
    operator is told is anomalous (the ``closed`` record's ``last_flagged_ts`` ends it), the
    events' point-wise view for SKAB's metrics."""
    events = windows["event_id"].to_numpy()
    return first_to_last(events, (events != "") & windows["flag"].to_numpy(dtype=bool))


def first_to_last(events: NDArray[Any], flagged: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """(m,) True from the first to the last ``flagged`` (m,) window of each event, ``events``
    (m,) naming the event each window belongs to (read only where flagged)."""
    spans = np.zeros(len(flagged), dtype=bool)
    rows = pd.Series(np.flatnonzero(flagged))
    bounds = rows.groupby(events[flagged]).agg(["min", "max"])
    for first, last in bounds.itertuples(index=False):
        spans[first : last + 1] = True
    return spans


def events_after_warmup(windows: pd.DataFrame, calibration: CalibrationConfig) -> NDArray[np.bool_]:
    """(m,) True at the first window of each alert event that ``calibration`` would make of
    the backtest's scores without the model's held-out scores (``from_held_out = false``):
    nothing is flagged during the warm-up. What judging the warm-up by them changed."""
    from streamer.backtest.sweep import SweepSetting, run_sweep

    (result,) = run_sweep(windows, [SweepSetting("warm-up", calibration)])
    return event_openings(windows["key"].to_numpy(), result.flags.flags)


def event_openings(keys: NDArray[Any], flags: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """(m,) True at the first window of each alert event the built-in ``[alerts]`` make of
    windows of ``keys`` (m,) flagged ``flags`` (m,)."""
    from streamer.backtest.event_counts import replay_events

    alerts = TandemConfig().alerts
    events = replay_events(keys, flags, alerts.quiet, alerts.cooldown)
    opened = np.zeros(len(flags), dtype=bool)
    numbers, first = np.unique(events.member, return_index=True)
    opened[first[numbers >= 0]] = True
    return opened


def flagged_spans(keys: NDArray[Any], flags: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """(m,) True from the first to the last flagged window of each alert event the built-in
    ``[alerts]`` make of ``flags`` (m,) of ``keys`` (m,): ``event_spans`` for a sweep's flags."""
    from streamer.backtest.event_counts import replay_events

    alerts = TandemConfig().alerts
    member = replay_events(keys, flags, alerts.quiet, alerts.cooldown).member
    return first_to_last(member, flags & (member >= 0))


def run_river(run: SeriesRun, table: WindowTable, n_train: int, q: float) -> None:
    """HST in a QuantileFilter, online: learn the first ``n_train`` windows, then score, classify
    and learn each later one (River's documented loop)."""
    from river import anomaly, compose, preprocessing

    started = time.perf_counter()
    model = compose.Pipeline(
        preprocessing.MinMaxScaler(),
        anomaly.QuantileFilter(anomaly.HalfSpaceTrees(seed=SEED), q=q),
    )
    gate = model["QuantileFilter"]
    names = [f"x{i}" for i in range(table.windows.shape[1])]
    scores = np.zeros(len(table))
    flags = np.zeros(len(table), dtype=bool)
    for i, row in enumerate(table.windows.astype(np.float64).tolist()):
        x = dict(zip(names, row, strict=True))
        if i >= n_train:
            scores[i] = model.score_one(x)
            flags[i] = gate.classify(scores[i])
        model.learn_one(x)
    run.scores["river_hst"] = scores
    run.flags[f"river_hst/q{round(100 * q)}"] = flags
    run.seconds["river_hst"] = time.perf_counter() - started


def run_pyod(run: SeriesRun, table: WindowTable, train: NDArray[np.bool_]) -> None:
    """IForest fitted on the ``train`` windows; its own ``predict`` flags every window."""
    from pyod.models.iforest import IForest

    started = time.perf_counter()
    data = table.windows.astype(np.float64)
    forest = IForest(random_state=SEED)
    forest.fit(data[train])
    run.scores["pyod_iforest"] = np.asarray(forest.decision_function(data), dtype=np.float64)
    run.flags["pyod_iforest/default"] = np.asarray(forest.predict(data), dtype=bool)
    run.seconds["pyod_iforest"] = time.perf_counter() - started


def same_rate(run: SeriesRun, scorer: str, reference: str) -> NDArray[np.bool_]:
    """Flags of ``scorer``'s top windows on the evaluated part, as many as ``reference`` flags
    there (ties to the earlier window)."""
    count = int(run.flags[reference][run.evaluated].sum())
    rows = np.flatnonzero(run.evaluated)
    order = np.argsort(-run.scores[scorer][rows], kind="stable")
    flags = np.zeros(len(run.evaluated), dtype=bool)
    flags[rows[order[:count]]] = True
    return flags


def run_series(series: Series, dataset: str, window: int, args: argparse.Namespace) -> SeriesRun:
    """Every method on one series."""
    started = time.perf_counter()
    table = windows_from_frame(series.frame, window, 1, source=series.name)
    row_ts = series.frame["ts"].to_numpy(dtype=np.int64)
    if table.labels is None or not np.array_equal(table.ts_ms, row_ts[window - 1 :]):
        raise RuntimeError(f"{series.name}: rows must be labelled and in time order")
    last_row = np.arange(len(table)) + window - 1
    before = last_row < series.train_rows
    train = before & (table.labels == 0)
    run = SeriesRun(
        name=series.name,
        dataset=dataset,
        window=window,
        keys=np.full(len(table), series.name),
        ts_ms=table.ts_ms,
        labels=table.labels,
        evaluated=~before,
        row_ts=row_ts,
        row_labels=series.frame["label"].to_numpy(dtype=np.int8),
        row_values=series.frame.iloc[:, 2].to_numpy(dtype=np.float64),
        train_rows=series.train_rows,
        spans=series.spans,
    )
    run_tandem(run, table, train, args)
    run_river(run, table, int(before.sum()), args.river_q)
    run_pyod(run, table, train)
    for scorer in ("river_hst", "pyod_iforest"):
        run.flags[f"{scorer}/same_rate"] = same_rate(run, scorer, "tandem/spot_default")
    run.seconds["total"] = time.perf_counter() - started
    log.info(
        "file_done",
        file=series.name,
        rows=len(row_ts),
        windows=len(table),
        train_windows=int(train.sum()),
        seconds={name: round(value, 2) for name, value in run.seconds.items()},
    )
    return run


# Aggregates ---------------------------------------------------------------------------------

Pick = Callable[[SeriesRun], NDArray[np.bool_]]
"""The flags (m,) of one method on one run."""


def pooled_metrics(runs: Sequence[SeriesRun], pick: Pick) -> dict[str, Any]:
    """Corpus metrics of ``pick``'s flags over the evaluated windows, each file one key (module
    docstring)."""
    keys = np.concatenate([r.keys[r.evaluated] for r in runs])
    ts = np.concatenate([r.ts_ms[r.evaluated] for r in runs])
    labels = np.concatenate([r.labels[r.evaluated] for r in runs])
    flags = np.concatenate([pick(r)[r.evaluated] for r in runs])
    out = evaluate(keys, ts, flags, labels).to_dict()
    per_file = [
        evaluate(
            r.keys[r.evaluated], r.ts_ms[r.evaluated], pick(r)[r.evaluated], r.labels[r.evaluated]
        )
        for r in runs
    ]
    with_events = [m.event_f1 for m in per_file if m.events]
    hits = alerts = positives = rows = 0
    for r in runs:
        flagged = r.rows_of(pick(r), False)[r.train_rows :]
        truth = r.row_labels[r.train_rows :] == 1
        hits += int((flagged & truth).sum())
        alerts += int(flagged.sum())
        positives += int(truth.sum())
        rows += len(truth)
    delays = out["delays_windows"]
    return {
        "event_f1": out["event_f1"],
        "event_recall": out["event_recall"],
        "event_precision": out["event_precision"],
        "mean_file_event_f1": round(float(np.mean(with_events)), 4) if with_events else 0.0,
        "point_f1": out["f1"],
        "point_precision": out["precision"],
        "point_recall": out["recall"],
        "point_f1_rows": round(_f1(hits, alerts, positives), 4),
        "far_rows": round((alerts - hits) / max(rows - positives, 1), 4),
        "mar_rows": round((positives - hits) / max(positives, 1), 4),
        "false_alarms_per_10k": round(out["false_alarms_per_10k"], 2),
        "alert_rate": round(out["alerts"] / max(out["labelled_windows"], 1), 5),
        "alerts": out["alerts"],
        "alarm_runs": out["alarm_runs"],
        "alarm_runs_on_events": out["alarm_runs_on_events"],
        "false_alarm_runs": out["false_alarm_runs"],
        "events": out["events"],
        "events_detected": out["events_detected"],
        "windows": out["labelled_windows"],
        "median_delay_ms": out["median_delay_ms"],
        "median_delay_windows": float(np.median(delays)) if delays else None,
    }


def _f1(hits: int, alerts: int, positives: int) -> float:
    return _harmonic(_ratio(hits, alerts), _ratio(hits, positives))


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _harmonic(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def nab_files(runs: Sequence[SeriesRun], pick: Pick) -> list[NabFileScore]:
    """NAB's standard-profile score of each run's flags, on the file's own rows."""
    return [
        nab_file_score(r.row_ts, r.rows_of(pick(r), False), r.spans or [], STANDARD) for r in runs
    ]


def onsets(flags: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The first window (m,) of each run of flagged windows: one detection per alarm run."""
    before = np.concatenate(([False], flags[:-1]))
    return flags & ~before


def nab_standard(runs: Sequence[SeriesRun], pick: Pick, only_onsets: bool = False) -> float | None:
    """NAB's normalised corpus score of ``pick``'s flags (of their alarm runs' first windows
    only, with ``only_onsets``); None without a scorable window."""
    chosen = (lambda r: onsets(pick(r))) if only_onsets else pick
    try:
        return round(normalised_score(nab_files(runs, chosen)), 2)
    except NabError:
        return None


def nab_best(runs: Sequence[SeriesRun], scorer: str) -> tuple[float, float] | None:
    """NAB's one threshold over the corpus for ``scorer``'s scores, and its normalised score."""
    files = []
    for r in runs:
        scores = r.scores[scorer]
        files.append((r.row_ts, r.rows_of(scores, float(scores.min())), r.spans or []))
    try:
        return best_threshold(files, STANDARD)
    except NabError:
        return None


METHOD_ORDER = (
    "tandem/events_warmup",
    "tandem/events",
    "tandem/events_tuned",
    "tandem/event_spans",
    "tandem/spot_default",
    "tandem/spot_tuned",
    "tandem/dspot_default",
    "tandem/likelihood_events",
    "tandem/likelihood_event_spans",
    "tandem/likelihood_windows",
    "tandem/raw_nab_best",
    "river_hst/q95",
    "river_hst/same_rate",
    "river_hst/raw_nab_best",
    "pyod_iforest/default",
    "pyod_iforest/same_rate",
    "pyod_iforest/raw_nab_best",
)


def scored(runs: Sequence[SeriesRun], pick: Pick, is_nab: bool) -> dict[str, Any]:
    """``pick``'s corpus metrics, led on NAB by its NAB scores (every flag, and onsets only)."""
    nab: dict[str, Any] = {}
    if is_nab:
        nab["nab_standard"] = nab_standard(runs, pick)
        nab["nab_standard_onsets"] = nab_standard(runs, pick, only_onsets=True)
    return {**nab, **pooled_metrics(runs, pick)}


def summarise(dataset: str, runs: list[SeriesRun], args: argparse.Namespace) -> dict[str, Any]:
    """The dataset's JSON: method rows, the tandem sweep, NAB thresholds, per-file results."""
    is_nab = dataset == "nab"
    sweep = []
    for rate in args.sweep_rates:
        sweep.append(
            {"target_rate": rate, **scored(runs, lambda r, rate=rate: r.sweep[rate], is_nab)}
        )
    objective = "nab_standard" if is_nab else "event_f1"
    tuned = max(sweep, key=lambda e: (e[objective] or 0.0, -e["target_rate"]))["target_rate"]
    sweep_events = [
        {
            "target_rate": rate,
            **scored(runs, lambda r, rate=rate: r.sweep_events[rate], is_nab),
        }
        for rate in args.sweep_rates
    ]
    events_tuned = max(sweep_events, key=lambda e: (e[objective] or 0.0, -e["target_rate"]))[
        "target_rate"
    ]
    for r in runs:
        r.flags["tandem/spot_tuned"] = r.sweep[tuned]
        r.flags["tandem/events_tuned"] = r.sweep_events[events_tuned]
    thresholds: dict[str, Any] = {}
    if is_nab:
        for scorer in ("tandem", "river_hst", "pyod_iforest"):
            best = nab_best(runs, scorer)
            if best is None:
                continue
            thresholds[scorer] = {"threshold": best[0], "nab_standard": round(best[1], 2)}
            for r in runs:
                r.flags[f"{scorer}/raw_nab_best"] = r.scores[scorer] >= best[0]
    operating = {
        "tandem/events_warmup": (
            "tandem/events without the held-out start: each key warms up on its first 1,000 "
            "windows (from_held_out = false)"
        ),
        "tandem/event_spans": "alert events: every window from an event's first to its last flag",
        "tandem/events": (
            "the alerts as emitted by the built-in defaults ([calibration]: SPOT, target_rate "
            f"{args.target_rate:g}, started from the held-out scores; [alerts]): each event's "
            "first window"
        ),
        "tandem/spot_default": f"SPOT, target_rate {args.target_rate:g}",
        "tandem/spot_tuned": f"SPOT, target_rate {tuned:g} (corpus best {objective} of the sweep)",
        "tandem/events_tuned": (
            f"alert events over SPOT, target_rate {events_tuned:g} (corpus best {objective} of "
            "the events sweep: chosen on the test labels)"
        ),
        "tandem/dspot_default": f"DSPOT (depth 50), target_rate {args.target_rate:g}",
        "tandem/likelihood_events": (
            "alert events over method = likelihood (the built-in [calibration] otherwise): each "
            "event's first window"
        ),
        "tandem/likelihood_event_spans": "method = likelihood: each event's first to last flag",
        "tandem/likelihood_windows": "method = likelihood: every flagged window",
        "river_hst/q95": f"QuantileFilter q={args.river_q:g}",
        "pyod_iforest/default": "predict, contamination 0.1",
        "river_hst/same_rate": "per file, as many alerts as tandem/spot_default (oracle)",
        "pyod_iforest/same_rate": "per file, as many alerts as tandem/spot_default (oracle)",
    }
    rows = []
    for method in (m for m in METHOD_ORDER if m in runs[0].flags):
        row: dict[str, Any] = {
            "method": method,
            "operating_point": operating.get(method, "NAB best_threshold on the raw score"),
        }
        rows.append({**row, **scored(runs, lambda r, m=method: r.flags[m], is_nab)})
    return {
        "files": len(runs),
        "window": runs[0].window,
        "rows": rows,
        "tandem_sweep": sweep,
        "tandem_sweep_events": sweep_events,
        "tuned_target_rate": tuned,
        "events_tuned_target_rate": events_tuned,
        "tuned_by": objective,
        "nab_best_thresholds": thresholds or None,
        "published": PUBLISHED[dataset],
        "seconds": {
            stage: round(sum(r.seconds.get(stage, 0.0) for r in runs), 1)
            for stage in ("tandem_train", "tandem_backtest", "river_hst", "pyod_iforest", "total")
        },
        "per_file": [per_file(r, is_nab) for r in runs],
    }


def per_file(run: SeriesRun, is_nab: bool) -> dict[str, Any]:
    """One file's counts per method (evaluated windows)."""
    keys, ts, labels = (a[run.evaluated] for a in (run.keys, run.ts_ms, run.labels))
    methods = {}
    for method in (m for m in METHOD_ORDER if m in run.flags):
        metrics = evaluate(keys, ts, run.flags[method][run.evaluated], labels)
        entry: dict[str, Any] = {
            "alerts": metrics.alerts,
            "events_detected": metrics.events_detected,
            "alarm_runs": metrics.alarm_runs,
            "alarm_runs_on_events": metrics.alarm_runs_on_events,
            "event_f1": round(metrics.event_f1, 4),
            "point_f1": round(metrics.f1, 4),
        }
        if is_nab:
            score = nab_files([run], lambda r, m=method: r.flags[m])[0]
            entry["nab_raw"] = round(score.raw, 3)
        methods[method] = entry
    return {
        "file": run.name,
        "rows": len(run.row_ts),
        "train_rows": run.train_rows,
        "windows": len(run.labels),
        "evaluated_windows": int(run.evaluated.sum()),
        "anomalous_windows": int((labels == 1).sum()),
        "events": evaluate(keys, ts, np.zeros(len(keys), dtype=bool), labels).events,
        "training": run.training,
        "seconds": {name: round(value, 2) for name, value in run.seconds.items()},
        "methods": methods,
    }


NAB_EXPORTS = {
    "tandem": "tandem/events",
    "tandemWindows": "tandem/spot_default",
    "tandemLikelihood": "tandem/likelihood_events",
}
"""NAB detector name → the method whose detections it exports: each alert event's first window
(what a user is paged with), and every flagged window."""


def export_nab(folder: Path, runs: Sequence[SeriesRun]) -> dict[str, Any]:
    """NAB's results layout, so NAB's own scorer can check the numbers: per detector and file,
    ``<folder>/<detector>/<category>/<detector>_<file>.csv`` with NAB's columns (``timestamp``,
    ``value``, ``anomaly_score``, ``label``), one row per data row, ``anomaly_score`` 1.0 where the
    method detects (0.5 is then any threshold in (0, 1])."""
    written = 0
    for detector, method in NAB_EXPORTS.items():
        for run in runs:
            category, name = run.name.split("/", 1)
            path = folder / detector / category / f"{detector}_{name}"
            path.parent.mkdir(parents=True, exist_ok=True)
            detected = run.rows_of(run.flags[method], False)
            pd.DataFrame(
                {
                    "timestamp": pd.to_datetime(run.row_ts, unit="ms").strftime(
                        "%Y-%m-%d %H:%M:%S"
                    ),
                    "value": run.row_values,
                    "anomaly_score": detected.astype(float),
                    "label": run.row_labels,
                }
            ).to_csv(path, index=False)
            written += 1
    log.info("nab_exported", folder=str(folder), files=written)
    return {"folder": str(folder), "detectors": dict(NAB_EXPORTS), "files": written}


# CLI ----------------------------------------------------------------------------------------

CHATTY_LOGGERS = ("streamer.runner", "streamer.backtest.run", "detectors")
"""Loggers of per-batch and per-model events, quieted unless ``--log-level debug``: the script's
own ``file_done`` summarises each file."""

LOADERS: dict[str, Callable[[Path], Iterator[Series]]] = {"nab": nab_series, "skab": skab_series}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with nab/, skab/")
    parser.add_argument("--datasets", default="nab,skab", help="comma-separated: nab, skab")
    parser.add_argument(
        "--window", type=int, help="steps per window (default: 16 for NAB, 10 for SKAB)"
    )
    parser.add_argument("--limit", type=int, help="only the first N files of each dataset")
    parser.add_argument("--epochs", type=int, default=30, help="cascade epochs (early stopping)")
    parser.add_argument(
        "--target-rate",
        type=float,
        default=TandemConfig().calibration.target_rate,
        help="SPOT target of the backtest (default: the built-in one)",
    )
    parser.add_argument(
        "--sweep-rates",
        type=lambda text: tuple(float(v) for v in text.split(",")),
        default=SWEEP_RATES,
        help="SPOT targets swept for spot_tuned (comma-separated)",
    )
    parser.add_argument("--river-q", type=float, default=0.95, help="QuantileFilter's q")
    parser.add_argument(
        "--memory",
        choices=["on", "off"],
        default="on",
        help="each key's memory of normal windows ([memory] enabled; on: the README's rule)",
    )
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--nab-export",
        type=Path,
        help="write NAB results files here (<DIR>/<detector>/<category>/<detector>_<file>.csv)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    args = parser.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in args.datasets if d not in LOADERS]
    if unknown:
        parser.error(f"unknown dataset {unknown[0]!r}; choose from {', '.join(LOADERS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, stream=sys.stderr)
    if args.log_level != "debug":
        for chatty in CHATTY_LOGGERS:
            logging.getLogger(chatty).setLevel(logging.WARNING)
        # Keras' retracing notice: each file builds fresh models, by design.
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    started = time.perf_counter()
    document: dict[str, Any] = {
        "benchmark": "eval_detection",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "data": str(args.data),
        "settings": {
            "epochs": args.epochs,
            "target_rate": args.target_rate,
            "sweep_rates": list(args.sweep_rates),
            "river_q": args.river_q,
            "memory": args.memory,
            "seed": SEED,
        },
    }
    for dataset in args.datasets:
        window = args.window or DEFAULT_WINDOW[dataset]
        series = list(LOADERS[dataset](args.data))[: args.limit]
        runs = [run_series(s, dataset, window, args) for s in series]
        document[dataset] = summarise(dataset, runs, args)
        if dataset == "nab" and args.nab_export:
            document["nab_export"] = export_nab(args.nab_export, runs)
        log.info(
            "dataset_done",
            dataset=dataset,
            files=len(runs),
            seconds=document[dataset]["seconds"]["total"],
        )
    document["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(document, allow_nan=False, default=_plain)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers for ``json.dumps``."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


if __name__ == "__main__":
    sys.exit(main())
