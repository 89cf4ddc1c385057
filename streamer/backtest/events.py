"""Detection metrics for backtests: how many anomalies were caught, how soon, and at what cost.

A backtest gives, per window in stream order, the entity ``key``, the stamp ``ts_ms`` (epoch ms of
the window's last step), whether it was flagged, and its label: 1 when the window holds an
anomalous step, 0 when it holds none, -1 when nobody knows. Unknown windows are dropped before
anything is counted, as if they were not in the stream: they are neither hits, misses nor false
alarms, and they neither split nor lengthen an event or an alarm run.

Two views, because each hides what the other shows:

* point-wise: every labelled window is one sample; precision, recall and F1 over windows. A long
  anomaly weighs more than a short one, and an alarm that stays up is counted once per window.
* event-wise: an *event* is a maximal run of anomalous windows of one key (consecutive in that
  key's own sequence of labelled windows; keys are interleaved in the stream). It is detected
  when any of its windows is flagged, after a delay from its first window to its first flagged
  one. An *alarm run* is a maximal run of flagged windows of one key; it is *on an event* when it
  holds an anomalous window, else a *false alarm run*. Event precision is detected events over
  detected events plus false alarm runs: one long alarm counts as one alert, as an operator sees
  it, and an alarm that flickers on and off inside one event earns one hit, not one per flicker
  (counting alarm runs on events as hits would let a flickering detector buy precision).

A ratio whose denominator is zero (no alert, no event, no normal window) is 0.0, never NaN: the
report must stay valid JSON, and a detector that raised nothing has caught nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from streamer.errors import LabelError


@dataclass(frozen=True)
class Event:
    """One anomaly as the windows see it: ``windows`` consecutive anomalous windows of ``key``,
    the first stamped ``start_ms`` and the last ``end_ms`` (epoch ms), and its ``kind`` when the
    caller's labels carry kinds (else "")."""

    key: str
    start_ms: int
    end_ms: int
    windows: int
    kind: str = ""


@dataclass(frozen=True)
class DetectionMetrics:
    """Point-wise and event-wise detection metrics of one backtest (module docstring).

    Counts are over labelled windows (label 0 or 1) except ``windows``, which counts them all.
    ``alerts`` are flagged labelled windows; ``false_alarms`` the flagged normal ones, also per
    10,000 normal windows. ``delays_ms`` and ``delays_windows`` hold, per detected event in the
    order of ``find_events``, the time (ms) and the number of windows from the event's first window
    to its first flagged one (0: caught on its first window). Ratios with a zero denominator are
    0.0; ``median_delay_ms`` is None when no event was detected."""

    windows: int
    labelled_windows: int
    anomalous_windows: int
    normal_windows: int
    alerts: int
    precision: float
    recall: float
    f1: float
    events: int
    events_detected: int
    event_recall: float
    alarm_runs: int
    alarm_runs_on_events: int
    false_alarm_runs: int
    event_precision: float
    event_f1: float
    false_alarms: int
    false_alarms_per_10k: float
    delays_ms: tuple[int, ...]
    delays_windows: tuple[int, ...]
    median_delay_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        """The metrics as JSON-ready Python values: floats rounded to 4 decimals, tuples as
        lists, nothing NaN."""
        out: dict[str, Any] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float):
                value = round(value, 4)
            elif isinstance(value, tuple):
                value = list(value)
            out[field.name] = value
        return out


@dataclass(frozen=True)
class _Grouped:
    """The labelled windows regrouped by key, each key's windows in stream order: ``rows`` (m,)
    indexes the caller's arrays, ``new_key`` (m,) marks the first window of each key."""

    rows: NDArray[np.intp]
    new_key: NDArray[np.bool_]


def evaluate(
    keys: NDArray[Any],
    ts_ms: NDArray[np.int64],
    flags: NDArray[np.bool_],
    labels: NDArray[np.int8],
) -> DetectionMetrics:
    """Detection metrics of windows in stream order: ``keys`` (n,) entity, ``ts_ms`` (n,) int64
    epoch-ms window stamps, ``flags`` (n,) bool alerted, ``labels`` (n,) int8 1/0/-1 (-1 unknown:
    left out). O(n log n) in numpy: about a second for a million windows."""
    keys, ts_ms, labels = _checked(keys, ts_ms, labels)
    flags = np.asarray(flags, dtype=bool)
    if flags.shape != labels.shape:
        raise ValueError(f"flags has shape {flags.shape}, labels {labels.shape}: expected equal")
    grouped = _group(keys, labels)
    ts = ts_ms[grouped.rows]
    flagged = flags[grouped.rows]
    anomalous = labels[grouped.rows] == 1
    hits = int((flagged & anomalous).sum())
    alerts = int(flagged.sum())
    n_anomalous = int(anomalous.sum())
    n_normal = len(anomalous) - n_anomalous
    false_alarms = alerts - hits
    precision = _ratio(hits, alerts)
    recall = _ratio(hits, n_anomalous)

    first, last = _event_bounds(grouped, keys, ts, anomalous)
    delays_ms, delays_windows = _delays(ts, flagged, first, last)
    run_first, run_last = _runs(flagged, grouped.new_key)
    anomalous_before = np.concatenate(([0], np.cumsum(anomalous)))
    on_events = int((anomalous_before[run_last + 1] > anomalous_before[run_first]).sum())
    event_recall = _ratio(len(delays_ms), len(first))
    false_runs = len(run_first) - on_events
    event_precision = _ratio(len(delays_ms), len(delays_ms) + false_runs)
    return DetectionMetrics(
        windows=len(keys),
        labelled_windows=len(grouped.rows),
        anomalous_windows=n_anomalous,
        normal_windows=n_normal,
        alerts=alerts,
        precision=precision,
        recall=recall,
        f1=_harmonic(precision, recall),
        events=len(first),
        events_detected=len(delays_ms),
        event_recall=event_recall,
        alarm_runs=len(run_first),
        alarm_runs_on_events=on_events,
        false_alarm_runs=false_runs,
        event_precision=event_precision,
        event_f1=_harmonic(event_recall, event_precision),
        false_alarms=false_alarms,
        false_alarms_per_10k=1e4 * _ratio(false_alarms, n_normal),
        delays_ms=tuple(delays_ms.tolist()),
        delays_windows=tuple(delays_windows.tolist()),
        median_delay_ms=float(np.median(delays_ms)) if len(delays_ms) else None,
    )


def find_events(
    keys: NDArray[Any],
    ts_ms: NDArray[np.int64],
    labels: NDArray[np.int8],
    kinds: NDArray[Any] | None = None,
) -> list[Event]:
    """The events of windows (or steps) in stream order (``keys`` (n,), ``ts_ms`` (n,) int64
    epoch ms, ``labels`` (n,) int8 1/0/-1): maximal runs of anomalous windows of one key, unknown
    windows dropped first; sorted by (start_ms, key). With ``kinds`` (n,) str, a run also ends
    where the kind changes, and each event carries its kind (the demo's injected anomalies)."""
    keys, ts_ms, labels = _checked(keys, ts_ms, labels)
    grouped = _group(keys, labels)
    ts = ts_ms[grouped.rows]
    kind_of = breaks = None
    if kinds is not None:
        kind_of = np.asarray(kinds, dtype=str)[grouped.rows]
        breaks = np.concatenate(([True], kind_of[1:] != kind_of[:-1]))
    first, last = _event_bounds(grouped, keys, ts, labels[grouped.rows] == 1, breaks)
    return [
        Event(str(key), start, end, count, "" if kind_of is None else str(kind_of[at]))
        for key, start, end, count, at in zip(
            keys[grouped.rows[first]].tolist(),
            ts[first].tolist(),
            ts[last].tolist(),
            (last - first + 1).tolist(),
            first.tolist(),
            strict=True,
        )
    ]


def _checked(
    keys: NDArray[Any], ts_ms: NDArray[np.int64], labels: NDArray[np.int8]
) -> tuple[NDArray[Any], NDArray[np.int64], NDArray[np.int8]]:
    keys = np.asarray(keys)
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    raw = np.asarray(labels)
    if not keys.shape == ts_ms.shape == raw.shape or keys.ndim != 1:
        raise ValueError(
            f"keys {keys.shape}, ts_ms {ts_ms.shape} and labels {raw.shape}: expected (n,) each"
        )
    bad = np.flatnonzero((raw != -1) & (raw != 0) & (raw != 1))
    if bad.size:
        row = int(bad[0])
        raise LabelError(
            f"labels: row {row} holds {raw[row].item()!r}; a label is 1, 0 or -1 (unknown)"
        )
    return keys, ts_ms, raw.astype(np.int8, copy=False)


def _group(keys: NDArray[Any], labels: NDArray[np.int8]) -> _Grouped:
    """The labelled rows grouped by key (a stable sort on integer key codes, so each key keeps
    its stream order)."""
    rows = np.flatnonzero(labels != -1)
    codes = pd.factorize(keys[rows], use_na_sentinel=False)[0]
    order = np.argsort(codes, kind="stable")
    grouped = codes[order]
    new_key = np.ones(len(rows), dtype=bool)
    new_key[1:] = grouped[1:] != grouped[:-1]
    return _Grouped(rows[order], new_key)


def _runs(
    values: NDArray[np.bool_], new_key: NDArray[np.bool_]
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """First and last positions (k,) each of the maximal runs of true ``values`` (m,) that do
    not cross a key boundary (``new_key`` (m,) marks each key's first position)."""
    before = np.zeros_like(values)
    before[1:] = values[:-1]
    after = np.zeros_like(values)
    after[:-1] = values[1:]
    key_ends = np.ones_like(new_key)
    key_ends[:-1] = new_key[1:]
    first = np.flatnonzero(values & (~before | new_key))
    last = np.flatnonzero(values & (~after | key_ends))
    return first, last


def _event_bounds(
    grouped: _Grouped,
    keys: NDArray[Any],
    ts: NDArray[np.int64],
    anomalous: NDArray[np.bool_],
    breaks: NDArray[np.bool_] | None = None,
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """The events' first and last grouped positions (k,) each, sorted by (start_ms, key). A run
    ends at each key's end, and also before every position ``breaks`` (m,) marks."""
    bounds = grouped.new_key if breaks is None else grouped.new_key | breaks
    first, last = _runs(anomalous, bounds)
    names = keys[grouped.rows[first]].astype(str)
    order = np.lexsort((names, ts[first]))
    return first[order], last[order]


def _delays(
    ts: NDArray[np.int64],
    flagged: NDArray[np.bool_],
    first: NDArray[np.intp],
    last: NDArray[np.intp],
) -> tuple[NDArray[np.int64], NDArray[np.intp]]:
    """Per detected event (in the order given), the delay in ms and in windows from its first
    window to its first flagged one."""
    positions = np.where(flagged, np.arange(len(flagged)), len(flagged))
    next_flag = np.minimum.accumulate(positions[::-1])[::-1]
    caught = next_flag[first]
    detected = caught <= last
    caught, start = caught[detected], first[detected]
    return ts[caught] - ts[start], caught - start


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _harmonic(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0
