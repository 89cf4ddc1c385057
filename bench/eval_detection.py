"""Detection quality on labelled public series (NAB, SKAB), tandem beside two peers, as JSON.

Per series, every method sees the same sliding windows (``--window`` steps of every channel,
stride 1, stamped with their last step, ``streamer.tables.windows_from_frame``) and the same labels
(a window is anomalous when it holds a labelled step):

- ``tandem``: a small cascade (``CascadeDetector``) trained on the series' leading normal part,
  then the whole series backtested through the daemon's run loop (``run_backtest`` over a
  ``FileSource``, JSON codec, SPOT calibration); the training part warms the calibrator up. Three
  operating points: ``spot_default`` (``--target-rate``), ``spot_tuned`` (one target rate for the
  whole corpus, the best of a ``run_sweep`` over ``--sweep-rates``: by NAB score on NAB, by pooled
  event F1 on SKAB, so chosen on the test labels, as NAB's own optimiser does), and on NAB
  ``raw_nab_best`` (NAB's ``best_threshold`` on the score itself, tail decades).
- ``river_hst``: River's ``HalfSpaceTrees`` behind a ``MinMaxScaler`` in a ``QuantileFilter``
  (River's documented set-up; the filter does not let HST learn from windows it flags). It learns
  the training part, then scores, classifies and learns each later window in order. ``q95``: the
  filter's own flags at q = 0.95; ``same_rate``: each file's HST scores on the evaluated part
  thresholded to flag exactly as many windows as ``tandem/spot_default`` flags there.
- ``pyod_iforest``: PyOD's ``IForest`` fitted on the training windows; ``default``: its
  ``predict`` (threshold from ``contamination`` 0.1); ``same_rate`` as for HST.

On NAB every continuous score also goes through ``best_threshold`` (``*/raw_nab_best``: one
threshold for all files, as NAB scores its published detectors). Tandem's score is in tail
decades against its own training errors, so one threshold means the same in every file; HST's and
IForest's scores are on per-file scales. The ``same_rate`` peers pick their per-file thresholds
knowing the whole evaluated part's scores (an oracle they would not have online), so that
comparison flatters the peers.

Protocols: NAB: each file in time order; train on NAB's probationary period (the first
``min(floor(0.15 n), 750)`` rows, ``streamer.nab_score.probation_rows``; labels unused); NAB
scores every row (a row's detection is the flag of the window ending on it; the first
``window - 1`` rows have none). SKAB (``valve1``): train on the first 400 rows of each experiment
(``anomaly-free.csv`` is not used: the published per-experiment protocol is followed). Metrics
cover the windows ending after the training rows, for every method alike.

Calibration per series: SPOT's warm-up is the training windows rounded down to whole refresh
blocks of 64 (so a threshold is in force from the first evaluated window, not 1,000 windows in),
its window 10,000, and its initial level ``min(0.98, 1 - 12 / warmup)`` so the warm-up holds at
least 12 peaks (SPOT fits nothing below 10).

Aggregates (``rows``) pool counts over files: each file is one key of one ``evaluate`` call, so
event recall is events detected / events, event precision alarm runs on events / alarm runs,
point precision and recall pool windows, false alarms per 10k pool normal windows, the median delay
pools detected events; ``mean_file_event_f1`` averages files that hold an event. ``point_f1_rows``
is point-wise F1 over the evaluated rows with the files' own row labels (SKAB's published F1).

Published for comparison: NAB standard profile on these 28 files, ARTime 76.2, Numenta HTM 65.8,
Random Cut Forest 44.2, Windowed Gaussian 33.9; SKAB point F1, Conv-AE 0.78, MSET 0.78, PCA 0.76,
LSTM-AE 0.74, Vanilla AE 0.39, Isolation Forest 0.29.

Data are read from ``../shared/data`` beside the repository (or ``--data DIR``), never copied.
Progress goes to stderr (structlog), the JSON alone to stdout (and ``--out FILE``).
Usage: .venv/bin/python bench/eval_detection.py [--datasets nab,skab] [--limit N] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pandas as pd
import structlog
from numpy.typing import NDArray

from detectors.spec import AutoencoderSpec, CascadeSpec
from streamer.config import CalibrationConfig, TandemConfig
from streamer.evaluation import evaluate, labels_from_ranges
from streamer.logging import configure_logging
from streamer.nab_score import (
    STANDARD,
    best_threshold,
    nab_file_score,
    normalised_score,
    probation_rows,
)
from streamer.tables import WindowTable, windows_from_frame

log = structlog.get_logger("bench.eval_detection")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_WINDOW = {"nab": 16, "skab": 10}
SKAB_TRAIN_ROWS = 400
SWEEP_RATES = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2)
REFRESH = 64
MIN_PEAKS_AT_WARMUP = 12
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
    ``row_ts`` and ``row_labels`` (n,) are the file's own rows."""

    name: str
    window: int
    keys: NDArray[np.str_]
    ts_ms: NDArray[np.int64]
    labels: NDArray[np.int8]
    evaluated: NDArray[np.bool_]
    row_ts: NDArray[np.int64]
    row_labels: NDArray[np.int8]
    train_rows: int
    spans: list[tuple[int, int]] | None
    flags: dict[str, NDArray[np.bool_]] = field(default_factory=dict)
    scores: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    sweep: dict[float, NDArray[np.bool_]] = field(default_factory=dict)
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
        ts = _epoch_ms(raw["timestamp"])
        spans = [(int(s), int(e)) for s, e in zip(*map(_epoch_ms_list, zip(*windows[name])))]
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
            {"ts": _epoch_ms(raw["datetime"]), "label": raw["anomaly"].astype(np.int8)}
        )
        frame = pd.concat([frame, channels], axis=1)
        yield Series(f"valve1/{path.name}", frame, SKAB_TRAIN_ROWS)


def _epoch_ms(column: pd.Series) -> NDArray[np.int64]:
    stamps = pd.to_datetime(column, utc=True, format="ISO8601")
    return np.asarray(stamps.dt.as_unit("ms").astype("int64").to_numpy(), dtype=np.int64)


def _epoch_ms_list(values: Sequence[str]) -> list[int]:
    return _epoch_ms(pd.Series(list(values))).tolist() if values else []


# Methods ------------------------------------------------------------------------------------


def cascade_spec(width: int, epochs: int) -> CascadeSpec:
    """A cascade sized for ``width`` features: AE1 width → 2L → L with L = 3/8 of the width (at
    most 16), AE2 L → 2K → K with K = L / 4 (at least 2); small batches, as the training parts
    hold a few hundred windows."""
    latent = min(16, max(4, width * 3 // 8))
    inner = max(2, latent // 4)
    return TandemConfig().train.model_copy(
        update={
            "ae1": AutoencoderSpec(hidden=(min(32, 2 * latent),), latent=latent),
            "ae2": AutoencoderSpec(hidden=(2 * inner,), latent=inner),
            "epochs": epochs,
            "batch_size": 32,
            "seed": SEED,
        }
    )


def calibration_for(train_windows: int, target_rate: float) -> CalibrationConfig:
    """SPOT for a series with ``train_windows`` training windows (module docstring)."""
    warmup = max(REFRESH, train_windows - train_windows % REFRESH)
    window = max(10_000, warmup)
    return CalibrationConfig(
        method="spot",
        target_rate=target_rate,
        window=window,
        warmup=warmup,
        refresh=REFRESH,
        init_level=min(0.98, 1.0 - MIN_PEAKS_AT_WARMUP / warmup),
    )


def run_tandem(
    run: SeriesRun, table: WindowTable, train: NDArray[np.bool_], args: argparse.Namespace
) -> None:
    """Train the cascade on ``train`` windows, backtest all of ``table``, sweep the rates."""
    from detectors.cascade import CascadeDetector
    from streamer.backtest import parse_sweep, run_backtest, run_sweep
    from streamer.backtest_sources import FileSource
    from streamer.codec import JsonCodec, Limits

    started = time.perf_counter()
    spec = cascade_spec(table.windows.shape[1], args.epochs)
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
    calibration = calibration_for(int(train.sum()), args.target_rate)
    codec = JsonCodec(Limits(table.windows.shape[1]))
    backtest = run_backtest(
        FileSource(table, codec, run.name, 4096),
        codec,
        detector,
        calibration,
        {"name": "eval_detection", "version": "unsaved"},
        run.name,
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
    rates = ",".join(f"{rate:g}" for rate in args.sweep_rates)
    for result in run_sweep(windows, parse_sweep(f"calibration.target_rate={rates}", calibration)):
        run.sweep[result.setting.calibration.target_rate] = result.flags.flags
    run.seconds["tandem_backtest"] = time.perf_counter() - started


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


def run_series(series: Series, window: int, args: argparse.Namespace) -> SeriesRun:
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
        window=window,
        keys=np.full(len(table), series.name),
        ts_ms=table.ts_ms,
        labels=table.labels,
        evaluated=~before,
        row_ts=row_ts,
        row_labels=series.frame["label"].to_numpy(dtype=np.int8),
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


def pooled_metrics(runs: Sequence[SeriesRun], pick: Callable[[SeriesRun], NDArray[np.bool_]]):
    """Corpus metrics of the flags ``pick`` gives per run, over the evaluated windows, each file
    one key (module docstring)."""
    keys = np.concatenate([r.keys[r.evaluated] for r in runs])
    ts = np.concatenate([r.ts_ms[r.evaluated] for r in runs])
    labels = np.concatenate([r.labels[r.evaluated] for r in runs])
    flags = np.concatenate([pick(r)[r.evaluated] for r in runs])
    metrics = evaluate(keys, ts, flags, labels)
    per_file = [evaluate(r.keys[r.evaluated], r.ts_ms[r.evaluated], pick(r)[r.evaluated],
                         r.labels[r.evaluated]) for r in runs]
    with_events = [m.event_f1 for m in per_file if m.events]
    hits = alerts = positives = 0
    for r in runs:
        rows = np.arange(len(r.row_ts)) >= r.train_rows
        flagged = r.rows_of(pick(r), False)[rows]
        truth = r.row_labels[rows] == 1
        hits += int((flagged & truth).sum())
        alerts += int(flagged.sum())
        positives += int(truth.sum())
    precision = hits / alerts if alerts else 0.0
    recall = hits / positives if positives else 0.0
    row_f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    out = metrics.to_dict()
    return {
        "event_f1": out["event_f1"],
        "event_recall": out["event_recall"],
        "event_precision": out["event_precision"],
        "mean_file_event_f1": round(float(np.mean(with_events)), 4) if with_events else 0.0,
        "point_f1": out["f1"],
        "point_precision": out["precision"],
        "point_recall": out["recall"],
        "point_f1_rows": round(row_f1, 4),
        "false_alarms_per_10k": round(out["false_alarms_per_10k"], 2),
        "alert_rate": round(out["alerts"] / out["labelled_windows"], 5)
        if out["labelled_windows"]
        else 0.0,
        "alerts": out["alerts"],
        "alarm_runs": out["alarm_runs"],
        "events": out["events"],
        "events_detected": out["events_detected"],
        "windows": out["labelled_windows"],
        "median_delay_ms": out["median_delay_ms"],
        "median_delay_windows": float(np.median(out["delays_windows"]))
        if out["delays_windows"]
        else None,
    }


def nab_of_flags(runs: Sequence[SeriesRun], pick: Callable[[SeriesRun], NDArray[np.bool_]]):
    """NAB's normalised standard score of per-window flags, each run one file."""
    return round(
        normalised_score(
            nab_file_score(r.row_ts, r.rows_of(pick(r), False), r.spans or [], STANDARD)
            for r in runs
        ),
        2,
    )
