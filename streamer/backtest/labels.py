"""Labels for a backtest's windows, from the first source that applies: ``--labels FILE`` of time
ranges; the data file's label column (``--labels COLUMN``, default ``label``); the records' own
``"label"`` field (topic backtests). Windows without any label are unknown (-1) and left out of
every metric. Also each key's labelled spans, which NAB scores as windows and the report shades.

A file of time ranges (``read_label_ranges``, then ``labels_from_ranges``) is a CSV
``start,end[,key]``, a JSON list of ``{"start", "end", "key"}``, or NAB's ``combined_windows.json``
(``{"file name": [[start, end], ...]}``, whose names are not keys).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from streamer.backtest.events import find_events
from streamer.backtest.run import Backtest
from streamer.errors import LabelError, MissingFileError
from streamer.ingest.tables import WindowTable, read_table, windows_from_frame


def load_labelled_windows(
    path: Path, window: int | None, stride: int, labels: str | None, missing: str = "dead-letter"
) -> WindowTable:
    """``path`` as windows, with the column ``labels`` (when it names a column, not a file)
    read as the 0/1 label instead of ``label``; ``MissingFileError`` when it names neither.
    Missing values are filled by the ``missing`` policy or kept, to be dead-lettered."""
    frame = read_table(Path(path))
    if labels is not None and not Path(labels).is_file():
        if labels not in frame.columns:
            raise MissingFileError(f"--labels {labels}: no such file (nor a column of {path})")
        frame = frame.drop(columns=["label"], errors="ignore").rename(columns={labels: "label"})
    return windows_from_frame(frame, window, stride, str(path), missing, keep_missing=True)


def attach_labels(
    backtest: Backtest, table: WindowTable | None, labels: str | None
) -> pd.DataFrame | None:
    """Set ``backtest.windows["label"]`` from the best source there is (module docstring);
    returns the time ranges when they came from a file (NAB scores them as its windows)."""
    windows = backtest.windows
    if labels is not None and Path(labels).is_file():
        ranges = read_label_ranges(
            Path(labels), data_name=backtest.source if table is not None else None
        )
        windows["label"] = labels_from_ranges(
            windows["key"].to_numpy(), windows["ts"].to_numpy(), ranges
        )
        return ranges
    if table is not None and table.labels is not None:
        windows["label"] = table.labels[windows["offset"].to_numpy()]
    return None


def labelled_spans(
    keys: NDArray[Any],
    ts_ms: NDArray[np.int64],
    labels: NDArray[np.int8],
    ranges: pd.DataFrame | None,
) -> dict[str, list[tuple[int, int]]]:
    """Per key of ``keys`` (n,), its labelled ``(start_ms, end_ms)`` spans: the ranges of a
    ranges file that name the key or no key, or else its events (first to last anomalous
    window). What NAB scores as windows and the timeline shades."""
    if ranges is None:
        spans: dict[str, list[tuple[int, int]]] = {}
        for event in find_events(keys, ts_ms, labels):
            spans.setdefault(event.key, []).append((event.start_ms, event.end_ms))
        return spans
    by_key = {}
    for key in pd.unique(keys).tolist():
        mine = ranges[ranges["key"].isna() | (ranges["key"] == key)]
        by_key[str(key)] = list(
            zip(mine["start_ms"].tolist(), mine["end_ms"].tolist(), strict=True)
        )
    return by_key


RANGE_COLUMNS = ("key", "start_ms", "end_ms")
"""Columns of the frame ``read_label_ranges`` returns."""


def read_label_ranges(path: Path, data_name: str | None = None) -> pd.DataFrame:
    """Labelled time ranges from a CSV (``start,end[,key]``) or JSON file (a list of
    ``{"start", "end", "key"?}`` or NAB's ``{"name": [[start, end], ...]}``): a frame with columns
    ``key`` (str, or None: any key), ``start_ms`` and ``end_ms`` (int64 epoch ms, inclusive).
    Times are epoch milliseconds or ISO-8601 strings (UTC when no offset is given).

    NAB's form holds the windows of many data files: with ``data_name`` (the data file's name,
    say ``nyc_taxi.csv``) only the entry of that file is read (``realKnownCause/nyc_taxi.csv``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such file of labelled ranges")
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
