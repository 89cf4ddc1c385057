"""Reading windows from CSV or Parquet files, as windows or as a raw series to cut into windows.

A file has optional reserved columns ``key`` (entity), ``ts`` (epoch milliseconds or ISO-8601;
``timestamp``, ``datetime`` or ``time`` when there is no ``ts``),
``label`` (0/1) and ``kind`` (anomaly kind), and numeric feature columns: everything else. Each row
is one window, unless a window length is given: then each row is one step of a multichannel
series, cut per entity (in file order) into sliding windows with ``streamer.ingest.windows``.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from streamer.errors import MissingFileError, TableError
from streamer.ingest.features import FeatureLayout, FeatureMismatchError
from streamer.ingest.windows import (
    sliding_windows,
    window_any,
    window_feature_names,
    window_last_steps,
)

RESERVED = ("key", "ts", "label", "kind")
DEFAULT_KEY = "default"
TIME_ALIASES = ("timestamp", "datetime", "time")
"""Read as ``ts`` when a file has no ``ts`` column (NAB's files say ``timestamp``, SKAB's
``datetime``)."""


@dataclass(frozen=True)
class WindowTable:
    """n windows: ``keys`` (n,), ``ts_ms`` (n,) int64, ``windows`` (n, D) float32, ``feature_names``
    (D,), and when the file has them ``labels`` (n,) int8 and ``kinds`` (n,) str."""

    keys: NDArray[np.str_]
    ts_ms: NDArray[np.int64]
    windows: NDArray[np.float32]
    feature_names: tuple[str, ...]
    labels: NDArray[np.int8] | None = None
    kinds: NDArray[np.str_] | None = None

    def __len__(self) -> int:
        return int(self.windows.shape[0])

    def select(self, mask: NDArray[np.bool_]) -> WindowTable:
        """The windows where ``mask`` (n,) is true, in order."""
        return self._rows(mask)

    def with_features(self, names: Sequence[str]) -> WindowTable:
        """The same windows reduced to the features ``names`` (each one of ``feature_names``),
        in the order given."""
        position = {name: i for i, name in enumerate(self.feature_names)}
        unknown = [name for name in names if name not in position]
        if unknown:
            raise TableError(f"no feature named {unknown[0]!r} in these windows")
        index = [position[name] for name in names]
        return replace(self, windows=self.windows[:, index], feature_names=tuple(names))

    def for_model(self, names: Sequence[str], source: str) -> WindowTable:
        """The same windows with their features matched by name to a model's ``names`` (D,),
        in the model's order, so a file with its columns in any order scores the same. A file of
        readings (one row per step, the model's channels as columns) is cut into the model's
        W-step windows first, as ``--window W`` would. A ``TableError`` names the features (or
        channels) missing and the ones the model does not know."""
        model = FeatureLayout.of(names)
        mine = FeatureLayout.of(self.feature_names)
        table = self
        if model.channels and not mine.channels:
            missing = [name for name in model.channels if name not in mine.names]
            unknown = [name for name in mine.names if name not in model.channels]
            if missing or unknown:
                raise TableError(f"{source}: {model.mismatch(missing, unknown)}")
            table = self.cut(model.steps)
        elif model.channels and mine.steps != model.steps:
            raise TableError(
                f"{source}: cut into windows of {mine.steps} steps, but the model reads windows "
                f"of {model.steps}: pass --window {model.steps}, or leave --window out"
            )
        try:
            order = model.order_of(table.feature_names)
        except FeatureMismatchError as error:
            hint = "; the model reads one window per row: leave out --window" * bool(mine.channels)
            raise TableError(f"{source}: {error}{hint}") from None
        return replace(table, windows=table.windows[:, order], feature_names=model.names)

    def readings_for(self, names: Sequence[str], source: str) -> WindowTable:
        """These rows as readings of the channels of a model with features ``names`` (a cut
        series), their columns matched by name in the model's channel order; a ``TableError``
        names the channels missing and the columns the model does not know."""
        model = FeatureLayout.of(names)
        try:
            order = FeatureLayout(model.channels).order_of(self.feature_names)
        except FeatureMismatchError as error:
            raise TableError(f"{source}: {error}") from None
        return replace(self, windows=self.windows[:, order], feature_names=model.channels)

    def cut(self, window: int, stride: int = 1) -> WindowTable:
        """These rows, read as steps of a series (one column per channel), cut per entity into
        windows of ``window`` steps every ``stride`` steps (as ``load_windows`` with a window)."""
        return _cut(
            self.keys,
            self.ts_ms,
            self.windows,
            self.labels,
            self.kinds,
            list(self.feature_names),
            window,
            stride,
        )

    def in_time_order(self) -> WindowTable:
        """The windows in time order, as a stream of all the entities carries them: each entity's
        windows keep their order, merged by time (``stream_order``)."""
        return self._rows(stream_order(self.keys, self.ts_ms, np.arange(len(self))))

    def _rows(self, index: NDArray[np.bool_] | NDArray[np.intp]) -> WindowTable:
        return WindowTable(
            keys=self.keys[index],
            ts_ms=self.ts_ms[index],
            windows=self.windows[index],
            feature_names=self.feature_names,
            labels=None if self.labels is None else self.labels[index],
            kinds=None if self.kinds is None else self.kinds[index],
        )

    def head_per_key(self, fraction: float) -> NDArray[np.bool_]:
        """(n,) mask of each entity's chronologically first ``fraction`` of windows."""
        mask = np.zeros(len(self), dtype=bool)
        for key in np.unique(self.keys):
            rows = np.flatnonzero(self.keys == key)
            mask[rows[: round(len(rows) * fraction)]] = True
        return mask


def read_table(path: Path) -> pd.DataFrame:
    """A CSV (``.csv``, ``.csv.gz``) or Parquet (``.parquet``, ``.pq``) file as a DataFrame;
    ``MissingFileError`` when there is no such file, ``TableError`` when it cannot be read."""
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
        if name.endswith((".csv", ".csv.gz")):
            return pd.read_csv(path, sep=_separator(path))
    except FileNotFoundError:
        raise MissingFileError(f"{path}: no such file") from None
    except (OSError, ValueError) as error:
        raise TableError(f"{path}: cannot be read: {error}") from None
    raise TableError(f"{path}: unknown format; use .csv, .csv.gz, .parquet or .pq")


def _separator(path: Path) -> str:
    """``;`` when the header line has semicolons and no commas (as SKAB's files), else ``,``."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt") as stream:
        header = stream.readline()
    return ";" if ";" in header and "," not in header else ","


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write CSV or Parquet by suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.lower().endswith((".parquet", ".pq")):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def load_windows(
    path: Path,
    window: int | None = None,
    stride: int = 1,
    missing: str = "dead-letter",
    keep_missing: bool = False,
) -> WindowTable:
    """Read ``path`` as windows (``window`` None) or as a series cut into windows; ``missing``
    and ``keep_missing`` as for ``windows_from_frame``."""
    return windows_from_frame(
        read_table(Path(path)), window, stride, str(path), missing, keep_missing
    )


def windows_from_frame(
    frame: pd.DataFrame,
    window: int | None = None,
    stride: int = 1,
    source: str = "data",
    missing: str = "dead-letter",
    keep_missing: bool = False,
) -> WindowTable:
    """A DataFrame as windows (``window`` None) or as a series cut into windows; ``source`` names
    it in error messages. Empty, NaN and infinite values: with ``missing = "fill-previous"``
    each entity's column is forward-filled (rows in file order) first; what is left is an error
    naming row, key and column, or kept as NaN (``keep_missing``: a backtest dead-letters the
    windows holding one, as the daemon would)."""
    path = source
    if "ts" not in frame:
        alias = next((c for c in TIME_ALIASES if c in frame.columns), None)
        if alias is not None:
            frame = frame.rename(columns={alias: "ts"})
    if not len(frame):  # before the dtype checks: a header-only CSV's columns are all text
        raise TableError(f"{path}: no rows, only column names")
    features = [column for column in frame.columns if column not in RESERVED]
    if not features:
        raise TableError(f"{path}: no feature columns besides {', '.join(RESERVED)}")
    non_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise TableError(f"{path}: column {non_numeric[0]!r} is not numeric (features must be)")
    keys: NDArray[np.str_] = (
        frame["key"].astype(str).to_numpy(dtype=str)
        if "key" in frame
        else np.full(len(frame), DEFAULT_KEY)
    )
    values = frame[features].to_numpy(dtype=np.float32)
    if missing == "fill-previous":
        values[~np.isfinite(values)] = np.nan
        values = pd.DataFrame(values).groupby(keys, sort=False).ffill().to_numpy(np.float32)
    if not keep_missing:
        _refuse_missing(values, keys, [str(f) for f in features], path, missing)
    ts_ms = _timestamps(frame, path)
    labels = frame["label"].to_numpy(dtype=np.int8) if "label" in frame else None
    kinds = frame["kind"].fillna("").astype(str).to_numpy(dtype=str) if "kind" in frame else None
    if window is None:
        return WindowTable(keys, ts_ms, values, tuple(str(f) for f in features), labels, kinds)
    return _cut(keys, ts_ms, values, labels, kinds, [str(f) for f in features], window, stride)


def _refuse_missing(
    values: NDArray[np.float32], keys: NDArray[np.str_], columns: list[str], path: str, missing: str
) -> None:
    """A ``TableError`` naming the row, key and column of the first value of ``values`` (n, C)
    that is empty, NaN or infinite, if any."""
    bad = ~np.isfinite(values)
    rows = np.flatnonzero(bad.any(axis=1))
    if not rows.size:
        return
    row = int(rows[0])
    column = columns[int(np.flatnonzero(bad[row])[0])]
    hint = (
        '; [codec].missing = "fill-previous" carries the previous row\'s value forward'
        if missing != "fill-previous"
        else " (nothing before it to fill it from)"
    )
    raise TableError(
        f"{path}: row {row} (key {str(keys[row])!r}): column {column!r} is empty, NaN or "
        f"infinite{hint}"
    )


def _timestamps(frame: pd.DataFrame, path: str) -> NDArray[np.int64]:
    if "ts" not in frame:
        return np.arange(len(frame), dtype=np.int64)
    column = frame["ts"]
    if pd.api.types.is_integer_dtype(column):
        return column.to_numpy(dtype=np.int64)
    try:
        stamps = pd.to_datetime(column, utc=True, format="ISO8601")
    except (ValueError, TypeError) as error:
        raise TableError(
            f"{path}: column 'ts' is neither epoch milliseconds nor ISO-8601: {error}"
        ) from None
    return np.asarray(stamps.dt.as_unit("ms").astype("int64").to_numpy(), dtype=np.int64)


def _cut(
    keys: NDArray[np.str_],
    ts_ms: NDArray[np.int64],
    values: NDArray[np.float32],
    labels: NDArray[np.int8] | None,
    kinds: NDArray[np.str_] | None,
    channels: list[str],
    window: int,
    stride: int,
) -> WindowTable:
    """Cut each entity's rows into windows, then merge all entities back into time order."""
    pieces: dict[str, list[NDArray[np.generic]]] = {
        "last": [],
        "windows": [],
        "labels": [],
        "kinds": [],
    }
    for key in pd.unique(keys):
        rows = np.flatnonzero(keys == key)
        pieces["last"].append(rows[window_last_steps(len(rows), window, stride)])
        pieces["windows"].append(sliding_windows(values[rows], window, stride))
        if labels is not None:
            pieces["labels"].append(window_any(labels[rows], window, stride))
        if kinds is not None:
            steps = kinds[rows]
            starts = range(0, len(rows) - window + 1, stride)
            pieces["kinds"].append(
                np.array([_first_kind(steps[s : s + window]) for s in starts], dtype=str)
            )
    last = np.concatenate(pieces["last"])
    order = stream_order(keys[last], ts_ms[last], last)
    return WindowTable(
        keys=keys[last][order],
        ts_ms=ts_ms[last][order],
        windows=np.concatenate(pieces["windows"])[order],
        feature_names=window_feature_names(channels, window),
        labels=None if labels is None else np.concatenate(pieces["labels"])[order].astype(np.int8),
        kinds=None if kinds is None else np.concatenate(pieces["kinds"])[order],
    )


def stream_order(
    keys: NDArray[np.str_], ts_ms: NDArray[np.int64], tiebreak: NDArray[np.integer]
) -> NDArray[np.intp]:
    """The order (n,) that merges the entities' windows by time while keeping each entity's own
    order: windows go by the latest time their entity has shown so far, then by ``tiebreak``
    (n,). So a clock that steps back (NAB's machine temperature file does, by 55 minutes) does
    not move a window before its predecessors, as a plain sort by time would."""
    latest = pd.Series(ts_ms).groupby(keys, sort=False).cummax().to_numpy()
    return np.lexsort((tiebreak, latest))


def _first_kind(kinds: NDArray[np.str_]) -> str:
    named = kinds[kinds != ""]
    return str(named[0]) if named.size else ""
