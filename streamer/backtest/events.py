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

Labels can also come from a file of time ranges (``read_label_ranges``, then
``labels_from_ranges``): a CSV ``start,end[,key]``, a JSON list of ``{"start", "end", "key"}``, or
NAB's ``combined_windows.json`` (``{"file name": [[start, end], ...]}``, whose names are not keys).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from streamer.errors import TandemError

RANGE_COLUMNS = ("key", "start_ms", "end_ms")
"""Columns of the frame ``read_label_ranges`` returns."""


class LabelError(TandemError):
    """Labels or a file of labelled time ranges cannot be used; the message names the file, the
    column or entry, and the row."""


@dataclass(frozen=True)
class Event:
    """One anomaly as the windows see it: ``windows`` consecutive anomalous windows of ``key``,
    the first stamped ``start_ms`` and the last ``end_ms`` (epoch ms)."""

    key: str
    start_ms: int
    end_ms: int
    windows: int


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
    keys: NDArray[Any], ts_ms: NDArray[np.int64], labels: NDArray[np.int8]
) -> list[Event]:
    """The events of windows in stream order (``keys`` (n,), ``ts_ms`` (n,) int64 epoch ms,
    ``labels`` (n,) int8 1/0/-1): maximal runs of anomalous windows of one key, unknown windows
    dropped first; sorted by (start_ms, key)."""
    keys, ts_ms, labels = _checked(keys, ts_ms, labels)
    grouped = _group(keys, labels)
    ts = ts_ms[grouped.rows]
    first, last = _event_bounds(grouped, keys, ts, labels[grouped.rows] == 1)
    return [
        Event(str(key), start, end, count)
        for key, start, end, count in zip(
            keys[grouped.rows[first]].tolist(),
            ts[first].tolist(),
            ts[last].tolist(),
            (last - first + 1).tolist(),
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
    grouped: _Grouped, keys: NDArray[Any], ts: NDArray[np.int64], anomalous: NDArray[np.bool_]
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """The events' first and last grouped positions (k,) each, sorted by (start_ms, key)."""
    first, last = _runs(anomalous, grouped.new_key)
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


def read_label_ranges(path: Path, data_name: str | None = None) -> pd.DataFrame:
    """Labelled time ranges from a CSV (``start,end[,key]``) or JSON file (a list of
    ``{"start", "end", "key"?}`` or NAB's ``{"name": [[start, end], ...]}``): a frame with columns
    ``key`` (str, or None: any key), ``start_ms`` and ``end_ms`` (int64 epoch ms, inclusive).
    Times are epoch milliseconds or ISO-8601 strings (UTC when no offset is given).

    NAB's form holds the windows of many data files: with ``data_name`` (the data file's name,
    say ``nyc_taxi.csv``) only the entry of that file is read (``realKnownCause/nyc_taxi.csv``)."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"{path}: no such file of labelled ranges")
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        frame = _csv_ranges(path)
    elif name.endswith(".json"):
        frame = _json_ranges(path, data_name)
    else:
        raise LabelError(f"{path}: unknown format of labelled ranges; use .csv or .json")
    return _parsed_ranges(frame, str(path))


def _csv_ranges(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as error:
        raise LabelError(f"{path}: cannot be read as CSV: {error}") from None
    for column in ("start", "end"):
        if column not in frame.columns:
            raise LabelError(
                f"{path}: no column {column!r}; a ranges CSV has columns start,end[,key]"
                f" (found {', '.join(map(str, frame.columns)) or 'none'})"
            )
    key = frame["key"] if "key" in frame.columns else pd.Series([None] * len(frame), dtype=object)
    return pd.DataFrame(
        {
            "what": [f"row {i}" for i in range(len(frame))],
            "key": key.to_numpy(dtype=object),
            "start": frame["start"].to_numpy(dtype=object),
            "end": frame["end"].to_numpy(dtype=object),
        }
    )


def _json_ranges(path: Path, data_name: str | None = None) -> pd.DataFrame:
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise LabelError(f"{path}: cannot be read as JSON: {error}") from None
    if isinstance(document, dict) and data_name is not None and len(document) > 1:
        document = _entry_of(document, data_name, path)
    rows: list[tuple[str, Any, Any, Any]] = []
    if isinstance(document, list):
        for i, entry in enumerate(document):
            if not isinstance(entry, dict):
                raise LabelError(f"{path}: entry {i} is not an object with start and end")
            for field in ("start", "end"):
                if field not in entry:
                    raise LabelError(f"{path}: entry {i} has no {field!r}")
            rows.append((f"entry {i}", entry.get("key"), entry["start"], entry["end"]))
    elif isinstance(document, dict):
        for name, spans in document.items():
            if not isinstance(spans, list):
                raise LabelError(f"{path}: {name!r} is not a list of [start, end] pairs")
            for i, span in enumerate(spans):
                if not isinstance(span, list) or len(span) != 2:
                    raise LabelError(f"{path}: {name!r} entry {i} is not a [start, end] pair")
                rows.append((f"{name!r} entry {i}", None, span[0], span[1]))
    else:
        raise LabelError(f"{path}: expected a JSON list of ranges or NAB's object of windows")
    return pd.DataFrame(
        {
            "what": [row[0] for row in rows],
            "key": pd.Series([row[1] for row in rows], dtype=object),
            "start": pd.Series([_json_time(row[2]) for row in rows], dtype=object),
            "end": pd.Series([_json_time(row[3]) for row in rows], dtype=object),
        }
    )


def _entry_of(document: dict[str, Any], data_name: str, path: Path) -> dict[str, Any]:
    """The entries of NAB's object of windows that name the data file ``data_name``."""
    base = Path(data_name).name
    chosen = {n: v for n, v in document.items() if n == data_name or Path(n).name == base}
    if not chosen:
        raise LabelError(
            f"{path}: no entry for {base} among its {len(document)} entries "
            f"(e.g. {', '.join(list(document)[:3])})"
        )
    return chosen


def _json_time(value: Any) -> Any:
    """A JSON time as text for ``_epoch_ms``: integral numbers as digits, anything else as is."""
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value


def _parsed_ranges(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    start = _epoch_ms(frame, "start", source)
    end = _epoch_ms(frame, "end", source)
    backwards = np.flatnonzero(end < start)
    if backwards.size:
        i = int(backwards[0])
        raise LabelError(
            f"{source}: {frame['what'].iloc[i]}: end {frame['end'].iloc[i]!r} is before start"
            f" {frame['start'].iloc[i]!r}"
        )
    keys = [None if _missing(key) else str(key) for key in frame["key"].tolist()]
    return pd.DataFrame(
        {
            "key": pd.Series(keys, dtype=object),
            "start_ms": pd.Series(start, dtype=np.int64),
            "end_ms": pd.Series(end, dtype=np.int64),
        },
        columns=list(RANGE_COLUMNS),
    )


def _epoch_ms(frame: pd.DataFrame, column: str, source: str) -> NDArray[np.int64]:
    """Column ``column`` of text times (digits: epoch ms; else ISO-8601) as (n,) int64 epoch ms."""
    values = frame[column]
    text = values.map(lambda v: v.strip() if isinstance(v, str) else v)
    is_text = text.map(lambda v: isinstance(v, str) and v != "")
    digits = is_text & text.map(lambda v: isinstance(v, str) and v.lstrip("-").isdigit())
    out = np.zeros(len(text), dtype=np.int64)
    ok = np.zeros(len(text), dtype=bool)
    for i in np.flatnonzero(digits.to_numpy(dtype=bool)).tolist():
        number = int(text.iloc[i])
        if -(2**63) <= number < 2**63:
            out[i], ok[i] = number, True
    iso = (is_text & ~digits).to_numpy(dtype=bool)
    if iso.any():
        stamps = pd.to_datetime(text[iso], utc=True, format="ISO8601", errors="coerce")
        parsed = stamps.notna().to_numpy()
        out[np.flatnonzero(iso)[parsed]] = (
            stamps[parsed].dt.as_unit("ms").astype("int64").to_numpy()
        )
        ok[np.flatnonzero(iso)[parsed]] = True
    bad = np.flatnonzero(~ok)
    if bad.size:
        i = int(bad[0])
        raise LabelError(
            f"{source}: {frame['what'].iloc[i]}: column {column!r} holds {values.iloc[i]!r},"
            " neither epoch milliseconds nor an ISO-8601 time"
        )
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value == ""


def labels_from_ranges(
    keys: NDArray[Any], ts_ms: NDArray[np.int64], ranges: pd.DataFrame
) -> NDArray[np.int8]:
    """(n,) int8 labels of windows ``keys`` (n,), ``ts_ms`` (n,) int64 epoch-ms stamps: 1 where
    the stamp lies in a range (``read_label_ranges``'s frame, inclusive) of the window's key, or
    of any key when the range's key is None; else 0. O((n + r) log r) for r ranges."""
    keys = np.asarray(keys)
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    if keys.shape != ts_ms.shape or keys.ndim != 1:
        raise ValueError(f"keys {keys.shape} and ts_ms {ts_ms.shape}: expected (n,) each")
    missing = [column for column in RANGE_COLUMNS if column not in ranges.columns]
    if missing:
        raise ValueError(f"ranges has no column {missing[0]!r}; expected {RANGE_COLUMNS}")
    labels = np.zeros(len(ts_ms), dtype=bool)
    range_keys = ranges["key"]
    anywhere = range_keys.isna().to_numpy()
    if anywhere.any():
        labels |= _covered(ts_ms, ranges[anywhere])
    keyed = ranges[~anywhere]
    if len(keyed):
        codes, uniques = pd.factorize(keys, use_na_sentinel=False)
        code_of = {str(key): code for code, key in enumerate(uniques.tolist())}
        order = np.argsort(codes, kind="stable")
        grouped = codes[order]
        for key, spans in keyed.groupby(keyed["key"].astype(str), sort=False):
            code = code_of.get(str(key))
            if code is None:
                continue
            lo, hi = np.searchsorted(grouped, [code, code + 1])
            rows = order[lo:hi]
            labels[rows] |= _covered(ts_ms[rows], spans)
    return labels.astype(np.int8)


def _covered(ts_ms: NDArray[np.int64], spans: pd.DataFrame) -> NDArray[np.bool_]:
    """(n,) whether each stamp lies in one of ``spans``: among the spans starting at or before
    the stamp, the latest end must reach it."""
    order = np.argsort(spans["start_ms"].to_numpy(dtype=np.int64), kind="stable")
    starts = spans["start_ms"].to_numpy(dtype=np.int64)[order]
    reach = np.maximum.accumulate(spans["end_ms"].to_numpy(dtype=np.int64)[order])
    started = np.searchsorted(starts, ts_ms, side="right")
    inside = np.zeros(len(ts_ms), dtype=bool)
    some = started > 0
    inside[some] = reach[started[some] - 1] >= ts_ms[some]
    return inside
