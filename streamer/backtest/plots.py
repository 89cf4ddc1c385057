"""The backtest report's plots, drawn with matplotlib (Agg, no display) and returned as PNG bytes.

Each function takes what a ``Backtest`` holds and draws one figure; none keeps global state
(``matplotlib.figure.Figure``, not pyplot), so reports can be drawn from any thread.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from numpy.typing import NDArray

from streamer.backtest.times import FIRST_MS, LAST_MS, shown, utc_times

MAX_POINTS = 3000
"""Points per plotted line: longer series are cut into this many bins, each drawn at its max,
so a one-window spike survives the thinning."""
ALERT = "#d62728"
LABEL = "#ff7f0e"


def timeline_png(
    windows: pd.DataFrame, spans: Mapping[str, Sequence[tuple[int, int]]], keys: Sequence[str]
) -> bytes:
    """Score and threshold over time for each of ``keys`` (one panel each), flagged windows as
    red dots (an alert event holds a run of them), labelled ranges ``spans`` (key →
    [(start_ms, end_ms)]) shaded."""
    figure = Figure(figsize=(11, 2.3 * len(keys) + 0.6), layout="constrained")
    axes = figure.subplots(len(keys), 1, sharex=False, squeeze=False)[:, 0]
    for ax, key in zip(axes, keys, strict=True):
        mine = windows[windows["key"] == key]
        rows = mine[shown(mine["ts"].to_numpy())]  # a time axis cannot place the others
        times = utc_times(rows["ts"].to_numpy())
        t, score = _thinned(times.to_numpy(), rows["score"].to_numpy())
        ax.plot(t, score, lw=0.7, color="#1f77b4", label="score")
        ax.plot(
            times.to_numpy(), rows["threshold"].to_numpy(), lw=1.2, color="black", label="threshold"
        )
        flagged = rows["flag"].to_numpy()
        ax.scatter(
            times.to_numpy()[flagged],
            rows["score"].to_numpy()[flagged],
            s=14,
            color=ALERT,
            zorder=3,
            label="flagged windows",
        )
        # A band at least 1/300 of the time axis wide, so a one-step event stays visible.
        ts = rows["ts"].to_numpy()
        least_ms = (int(ts[-1]) - int(ts[0])) / 300 if len(ts) else 0.0
        for start, end in spans.get(key, ()):
            middle, half = (start + end) / 2, max(end - start, least_ms) / 2
            first, last = max(middle - half, FIRST_MS), min(middle + half, LAST_MS)
            if first > last:
                continue
            ax.axvspan(
                pd.Timestamp(first, unit="ms", tz="UTC"),
                pd.Timestamp(last, unit="ms", tz="UTC"),
                color=LABEL,
                alpha=0.25,
                lw=0,
            )
        hidden = len(mine) - len(rows)
        untimed = f" ({hidden:,} timed before 1677 or after 2262 not drawn)" if hidden else ""
        ax.set_title(
            f"{_literal(key)}: {len(mine):,} windows, {int(mine['flag'].sum()):,} flagged{untimed}",
            loc="left",
            fontsize=10,
        )
        ax.set_ylabel("score (tail decades)")
        locator = AutoDateLocator()  # type: ignore[no-untyped-call]
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
        ax.grid(alpha=0.3)
    if len(keys):
        handles, names = axes[0].get_legend_handles_labels()
        if any(spans.get(key) for key in keys):
            from matplotlib.patches import Patch

            handles.append(Patch(color=LABEL, alpha=0.25))
            names.append("labelled anomaly")
        figure.legend(handles, names, loc="outside upper right", fontsize=8, ncols=4)
    return _png(figure)


def parts_png(windows: pd.DataFrame, parts: Sequence[str]) -> bytes:
    """The distribution of each score part (AE1, AE2: one panel each), normal and labelled
    anomalous windows apart when labels are known, on a log count axis."""
    figure = Figure(figsize=(11, 3.2), layout="constrained")
    axes = figure.subplots(1, len(parts), squeeze=False)[0]
    labels = windows["label"].to_numpy()
    for ax, part in zip(axes, parts, strict=True):
        values = windows[part].to_numpy()
        bins = np.linspace(float(values.min()), float(values.max()) + 1e-9, 60)
        if (labels >= 0).any():
            ax.hist(values[labels == 0], bins=bins, alpha=0.7, label="normal", color="#1f77b4")
            ax.hist(
                values[labels == 1], bins=bins, alpha=0.8, label="labelled anomaly", color=LABEL
            )
            ax.legend(fontsize=8)
        else:
            ax.hist(values, bins=bins, color="#1f77b4")
        ax.set_yscale("log")
        ax.set_title(f"{_literal(part)}: score part", loc="left", fontsize=10)
        ax.set_xlabel("tail decades")
        ax.grid(alpha=0.3)
    return _png(figure)


def blame_png(top_features: Sequence[Mapping[str, Any]]) -> bytes:
    """The most blamed features over all alerts, as horizontal bars of summed shares."""
    names = [_literal(str(f["feature"])) for f in top_features][::-1]
    shares = [float(f["share_sum"]) for f in top_features][::-1]
    figure = Figure(figsize=(8, 0.32 * len(names) + 1.0), layout="constrained")
    ax = figure.subplots()
    ax.barh(names, shares, color=ALERT, alpha=0.8)
    ax.set_xlabel("sum over alerts of the feature's share of AE1's error")
    ax.set_title("top blamed features", loc="left", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _png(figure)


def _thinned(
    times: NDArray[Any], values: NDArray[np.float64]
) -> tuple[NDArray[Any], NDArray[np.float64]]:
    """At most ``MAX_POINTS`` points: each bin's first time and largest value."""
    if len(values) <= MAX_POINTS:
        return times, values
    edges = np.linspace(0, len(values), MAX_POINTS + 1).astype(int)[:-1]
    return times[edges], np.maximum.reduceat(values, edges)


def _literal(text: str) -> str:
    """``text`` as matplotlib draws it literally: every ``$`` escaped, so a key or feature name
    such as ``$x^{$`` is not parsed as mathtext (which fails, or draws something else)."""
    return text.replace("$", r"\$")


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()
