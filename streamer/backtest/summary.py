"""``report.json``'s content: counts, timings, thresholds over time, per-key summaries,
dead-letter reasons, and with labels the detection metrics (``streamer.backtest.events``) and NAB's
standard-profile score (``streamer.backtest.nab``), for the run and for every sweep setting."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from calibration.base import Flags
from streamer.backtest.events import evaluate
from streamer.backtest.labels import labelled_spans
from streamer.backtest.nab import STANDARD, nab_file_score, normalised_score
from streamer.backtest.run import Backtest

WINDOW_STEP = re.compile(r"\[t-\d+\]$")
"""The step suffix of a feature of a series cut into windows (``streamer.windows``)."""
THRESHOLD_POINTS = 400
"""Points per threshold curve in report.json (evenly spaced over the run)."""
REPORTED_KEYS = 1000
"""Per-key summaries kept in report.json (the keys with most alerts first)."""


def summarise(backtest: Backtest, ranges: pd.DataFrame | None = None) -> dict[str, Any]:
    """``report.json``'s content (see the module docstring)."""
    windows = backtest.windows
    labelled = bool((windows["label"].to_numpy() >= 0).any())
    flags = windows["flag"].to_numpy()
    report: dict[str, Any] = {
        "source": backtest.source,
        "model": backtest.model,
        "calibration": backtest.calibration.model_dump(),
        "counts": _counts(backtest, int(flags.sum())),
        "timings": {
            "seconds": round(backtest.seconds, 3),
            "windows_per_s": round(len(windows) / backtest.seconds, 1)
            if backtest.seconds > 0
            else None,
            "stage_seconds": {k: round(v, 3) for k, v in backtest.stage_seconds.items()},
        },
        "dead_letters": _dead_letter_reasons(backtest),
        "metrics": _metrics(windows, flags, ranges) if labelled else None,
        "thresholds": _threshold_curves(windows, backtest.calibration.per_key),
        "per_key": _per_key(windows, labelled),
        "top_features": top_blamed(backtest.alerts),
        "top_channels": top_blamed(backtest.alerts, by_channel=True)
        if any(WINDOW_STEP.search(name) for name in backtest.feature_names)
        else None,
        "sweep": [
            _sweep_row(result.setting.name, windows, result.flags, labelled, ranges)
            for result in backtest.sweep
        ],
    }
    return report


def _counts(backtest: Backtest, alerts: int) -> dict[str, Any]:
    windows = len(backtest.windows)
    return {
        "records": backtest.records,
        "windows": windows,
        "keys": int(backtest.windows["key"].nunique()),
        "alerts": alerts,
        "alerts_per_10k": round(1e4 * alerts / windows, 3) if windows else 0.0,
        "dead_letters": len(backtest.dead_letters),
    }


def _dead_letter_reasons(backtest: Backtest, examples: int = 20) -> dict[str, Any]:
    """How many dead letters per stage, and the first few with their position and reason."""
    return {
        "by_stage": dict(Counter(letter.stage for letter in backtest.dead_letters)),
        "first": [
            {"source": letter.record.position, "stage": letter.stage, "reason": letter.reason}
            for letter in backtest.dead_letters[:examples]
        ],
    }


def _metrics(
    windows: pd.DataFrame, flags: NDArray[np.bool_], ranges: pd.DataFrame | None
) -> dict[str, Any]:
    keys = windows["key"].to_numpy()
    ts = windows["ts"].to_numpy()
    labels = windows["label"].to_numpy()
    metrics = evaluate(keys, ts, flags, labels).to_dict()
    metrics["nab_standard"] = nab_standard(keys, ts, flags, labels, ranges)
    return metrics


def nab_standard(
    keys: NDArray[Any],
    ts_ms: NDArray[np.int64],
    flags: NDArray[np.bool_],
    labels: NDArray[np.int8],
    ranges: pd.DataFrame | None,
) -> float | None:
    """NAB's normalised standard-profile score with each key as one of NAB's files (n,) arrays
    in stream order, its windows the key's ``labelled_spans``. None when no key has a window."""
    spans = labelled_spans(keys, ts_ms, labels, ranges)
    files = []
    for key, rows in pd.Series(keys).groupby(keys, sort=False).indices.items():
        # NAB reads a file's rows in order and wants their times to rise: a row whose clock
        # stepped back is scored at the latest time seen so far.
        rising = np.maximum.accumulate(ts_ms[rows])
        files.append(nab_file_score(rising, flags[rows], spans.get(str(key), []), STANDARD))
    if not any(score.perfect != score.null for score in files):
        return None
    return round(normalised_score(files), 2)


def _sweep_row(
    name: str,
    windows: pd.DataFrame,
    flags: Flags,
    labelled: bool,
    ranges: pd.DataFrame | None,
) -> dict[str, Any]:
    alerts = int(flags.flags.sum())
    row: dict[str, Any] = {
        "setting": name,
        "alerts": alerts,
        "alerts_per_10k": round(1e4 * alerts / len(windows), 3) if len(windows) else 0.0,
    }
    if labelled:
        row["metrics"] = _metrics(windows, flags.flags, ranges)
    return row


def _threshold_curves(windows: pd.DataFrame, per_key: bool) -> dict[str, list[list[float]]]:
    """``[ts_ms, threshold]`` pairs, at most ``THRESHOLD_POINTS`` per curve: the global curve
    (every window, in order), or with per-key thresholds one curve per key for the ten keys
    with the most windows. Warm-up rows (no threshold yet) are left out."""
    chosen = windows["key"].value_counts().index[:10].tolist() if per_key else [None]
    curves = {}
    for key in chosen:
        rows = windows if key is None else windows[windows["key"] == key]
        rows = rows[rows["threshold"].notna()]
        step = max(1, len(rows) // THRESHOLD_POINTS)
        sample = rows.iloc[::step]
        curves["global" if key is None else str(key)] = [
            [int(t), round(float(v), 4)]
            for t, v in zip(sample["ts"].tolist(), sample["threshold"].tolist(), strict=True)
        ]
    return curves


def _per_key(windows: pd.DataFrame, labelled: bool) -> list[dict[str, Any]]:
    grouped = windows.groupby("key", sort=False)
    summary = pd.DataFrame(
        {
            "windows": grouped.size(),
            "alerts": grouped["flag"].sum(),
            "score_p50": grouped["score"].median(),
            "score_p99": grouped["score"].quantile(0.99),
            "last_threshold": grouped["threshold"].last(),
        }
    )
    if labelled:
        normal = windows["label"] == 0
        summary["anomalous_windows"] = (windows["label"] == 1).groupby(windows["key"]).sum()
        summary["false_alarms"] = (windows["flag"] & normal).groupby(windows["key"]).sum()
    summary = summary.sort_values(["alerts", "windows"], ascending=False).head(REPORTED_KEYS)
    rows = []
    for key, values in summary.iterrows():
        row: dict[str, Any] = {"key": str(key)}
        for name, value in values.items():
            number = float(value)
            row[str(name)] = (
                None
                if np.isnan(number)
                else (
                    int(number)
                    if name in ("windows", "alerts", "anomalous_windows", "false_alarms")
                    else round(number, 4)
                )
            )
        rows.append(row)
    return rows


def top_blamed(
    alerts: Sequence[Mapping[str, Any]], limit: int = 15, by_channel: bool = False
) -> list[dict[str, Any]]:
    """The features most blamed over all alerts: each alert's top features' shares summed,
    largest first, with how many alerts named the feature first. ``by_channel`` sums the
    features of a cut series per channel (``temp[t-3]`` counts for ``temp``)."""
    shares: dict[str, float] = {}
    first: Counter[str] = Counter()
    name_of = _channel if by_channel else str
    for alert in alerts:
        features = alert["top_features"]
        for feature in features:
            name = name_of(feature["name"])
            shares[name] = shares.get(name, 0.0) + float(feature["share"])
        if features:
            first[name_of(features[0]["name"])] += 1
    ranked = sorted(shares.items(), key=lambda item: -item[1])[:limit]
    return [
        {"feature": name, "share_sum": round(total, 3), "alerts_first": first[name]}
        for name, total in ranked
    ]


def _channel(feature: str) -> str:
    return WINDOW_STEP.sub("", feature)


def sweep_table(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The sweep rows of a report as a header and formatted cells: for the terminal and the
    page alike."""
    labelled = bool(rows) and "metrics" in rows[0]
    header = ["setting", "alerts", "per 10k"]
    if labelled:
        header += ["events caught", "event F1", "point F1", "false alarms /10k", "delay s", "NAB"]
    cells = []
    for row in rows:
        line = [str(row["setting"]), f"{row['alerts']:,}", f"{row['alerts_per_10k']:.1f}"]
        if labelled:
            m = row["metrics"]
            delay, nab = m.get("median_delay_ms"), m.get("nab_standard")
            line += [
                f"{m['events_detected']} / {m['events']}",
                f"{m['event_f1']:.3f}",
                f"{m['f1']:.3f}",
                f"{m['false_alarms_per_10k']:.2f}",
                "-" if delay is None else f"{delay / 1000:,.1f}",
                "-" if nab is None else f"{nab:.1f}",
            ]
        cells.append(line)
    return header, cells
