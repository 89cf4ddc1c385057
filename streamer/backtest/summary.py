"""``report.json``'s content: counts, timings, alert events (``streamer.backtest.event_counts``),
thresholds over time, per-key summaries, dead-letter reasons, and with labels the detection metrics
(``streamer.backtest.events``) and NAB's standard-profile score (``streamer.backtest.nab``), for the
run and for every sweep setting."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from calibration.base import Flags
from streamer.backtest.event_counts import (
    EventWindows,
    against_labels,
    events_of_ids,
    replay_events,
    verdicts,
)
from streamer.backtest.events import evaluate
from streamer.backtest.labels import labelled_spans
from streamer.backtest.nab import STANDARD, nab_file_score, normalised_score
from streamer.backtest.run import Backtest
from streamer.backtest.sweep import SweepSetting
from streamer.backtest.times import utc_iso
from streamer.config import AlertsConfig

WINDOW_STEP = re.compile(r"\[t-\d+\]$")
"""The step suffix of a feature of a series cut into windows (``streamer.ingest.windows``)."""
THRESHOLD_POINTS = 400
"""Points per threshold curve in report.json (evenly spaced over the run)."""
REPORTED_KEYS = 1000
"""Per-key summaries kept in report.json (the keys with most alerts first)."""
LISTED_EVENTS = 50
"""Alert events listed in report.json (the highest peak scores first)."""


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
        "events": _events(backtest, labelled),
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
            _sweep_row(result.setting, backtest.alerting, windows, result.flags, labelled, ranges)
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
        "alert_records": len(backtest.alerts),
        "dead_letters": len(backtest.dead_letters),
    }


def _events(backtest: Backtest, labelled: bool) -> dict[str, Any]:
    """The alert events of an ``events``-mode run: how many opened, closed and stayed open, how
    they fall on the labels, and the ``LISTED_EVENTS`` with the highest peaks. A ``windows``-mode
    run has no events: its mode and alert counts only."""
    alerting, windows = backtest.alerting, backtest.windows
    if alerting.mode == "windows":
        return {
            "mode": "windows",
            "alerts": int(windows["flag"].sum()),
            "alert_records": len(backtest.alerts),
        }
    latest = {alert["event_id"]: alert for alert in backtest.alerts if "event_id" in alert}
    closed = {event_id for event_id, alert in latest.items() if alert["type"] == "closed"}
    events, ids = events_of_ids(windows["event_id"].to_numpy(), closed)
    return {
        "mode": "events",
        "quiet": alerting.quiet,
        "update_every": alerting.update_every,
        "cooldown": alerting.cooldown,
        **_event_counts(events, windows, labelled),
        "list": _event_list(events, ids, windows, latest, labelled),
    }


def _event_counts(events: EventWindows, windows: pd.DataFrame, labelled: bool) -> dict[str, Any]:
    keys, labels = windows["key"].to_numpy(), windows["label"].to_numpy()
    return {
        **events.tally(),
        "against_labels": against_labels(events, keys, labels) if labelled else None,
    }


def _event_list(
    events: EventWindows,
    ids: Sequence[str],
    windows: pd.DataFrame,
    latest: Mapping[str, Mapping[str, Any]],
    labelled: bool,
) -> list[dict[str, Any]]:
    """The ``LISTED_EVENTS`` events with the highest peak scores, from their windows (times,
    counts, the peak: the first of the highest-scoring flagged windows, as ``EventTracker``
    keeps it) and their latest record (blame and kind, as of that record)."""
    if not events.count:
        return []
    inside = windows.assign(event=events.member)[events.member >= 0].reset_index(drop=True)
    grouped = inside.groupby("event", sort=True)
    flagged = inside[inside["flag"]].groupby("event", sort=True)
    peaks = inside.loc[flagged["score"].idxmax()].set_index("event")
    table = pd.DataFrame(
        {
            "key": grouped["key"].first(),
            "opened_ts": grouped["ts"].first(),
            "last_flagged_ts": flagged["ts"].last(),
            "windows": grouped.size(),
            "flagged": flagged.size(),
            "peak_score": peaks["score"],
            "threshold": peaks["threshold"],
            "surprise": peaks["surprise"],
        }
    )
    verdict = verdicts(events, windows["label"].to_numpy()) if labelled else None
    top = table.sort_values("peak_score", ascending=False, kind="stable").head(LISTED_EVENTS)
    listed = []
    numbers: list[int] = top.index.to_numpy(np.int64).tolist()
    for number, row in zip(numbers, top.to_dict("records"), strict=True):
        event_id = ids[number]
        record = latest.get(event_id, {})
        entry: dict[str, Any] = {
            "event_id": event_id,
            "key": str(row["key"]),
            "opened_utc": utc_iso(row["opened_ts"]),
            "last_flagged_utc": utc_iso(row["last_flagged_ts"]),
            "windows": int(row["windows"]),
            "flagged": int(row["flagged"]),
            "peak_score": float(row["peak_score"]),
            "threshold": float(row["threshold"]),
        }
        if np.isfinite(row["surprise"]):
            entry["surprise"] = round(float(row["surprise"]), 4)
        entry["top_features"] = list(record.get("top_features", []))
        if "kind" in record:
            entry["kind"] = record["kind"]
            entry["kind_confidence"] = record.get("kind_confidence")
        entry["verdict"] = "unlabelled" if verdict is None else str(verdict[number])
        entry["closed"] = bool(events.closed[number])
        listed.append(entry)
    return listed


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
    setting: SweepSetting,
    run: AlertsConfig,
    windows: pd.DataFrame,
    flags: Flags,
    labelled: bool,
    ranges: pd.DataFrame | None,
) -> dict[str, Any]:
    """A sweep setting's alerts, the events they would make under its ``[alerts]`` quiet and
    cooldown (in either mode: what ``mode = "events"`` would open), and with labels its
    metrics."""
    alerts = int(flags.flags.sum())
    alerting = setting.alerting(run)
    events = replay_events(
        windows["key"].to_numpy(), flags.flags, alerting.quiet, alerting.cooldown
    )
    row: dict[str, Any] = {
        "setting": setting.name,
        "alerts": alerts,
        "alerts_per_10k": round(1e4 * alerts / len(windows), 3) if len(windows) else 0.0,
        "events": {
            "quiet": alerting.quiet,
            "cooldown": alerting.cooldown,
            **_event_counts(events, windows, labelled),
        },
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
    header = ["setting", "alerts", "per 10k", "events"]
    if labelled:
        header += ["on anomalies", "false-alarm events", "anomalies flagged", "event F1"]
        header += ["point F1", "false alarms /10k", "delay s", "NAB"]
    cells = []
    for row in rows:
        events = row["events"]
        line = [
            str(row["setting"]),
            f"{row['alerts']:,}",
            f"{row['alerts_per_10k']:.1f}",
            f"{events['count']:,}",
        ]
        if labelled:
            m, on_labels = row["metrics"], events["against_labels"]
            delay, nab = m.get("median_delay_ms"), m.get("nab_standard")
            line += [
                f"{on_labels['on_anomalies']:,}",
                f"{on_labels['false_alarms']:,}",
                f"{m['events_detected']} / {m['events']}",
                f"{m['event_f1']:.3f}",
                f"{m['f1']:.3f}",
                f"{m['false_alarms_per_10k']:.2f}",
                "-" if delay is None else f"{delay / 1000:,.1f}",
                "-" if nab is None else f"{nab:.1f}",
            ]
        cells.append(line)
    return header, cells
