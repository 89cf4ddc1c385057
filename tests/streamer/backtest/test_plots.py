"""The report's plots draw any key, feature name and time the daemon accepts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from streamer.backtest.plots import blame_png, parts_png, timeline_png

PNG = b"\x89PNG"


def trace(keys: list[str], ts: list[int]) -> pd.DataFrame:
    """A score trace of ``len(ts)`` windows, every third flagged, as a ``Backtest`` keeps it."""
    n = len(ts)
    score = np.linspace(0.0, 5.0, n)
    return pd.DataFrame(
        {
            "key": keys,
            "ts": np.asarray(ts, dtype=np.int64),
            "label": np.arange(n) % 2,
            "score": score,
            "ae1": score,
            "threshold": np.full(n, 2.0),
            "flag": np.arange(n) % 3 == 0,
        }
    )


def test_keys_and_feature_names_are_drawn_literally_not_as_mathtext() -> None:
    key = "$x^{$"
    windows = trace([key] * 6, [1000 * i for i in range(6)])
    windows = windows.rename(columns={"ae1": "$a^{$"})
    assert timeline_png(windows, {key: [(1000, 2000)]}, [key]).startswith(PNG)
    assert parts_png(windows, ["$a^{$"]).startswith(PNG)
    assert blame_png([{"feature": "$b_{$", "share_sum": 1.5}]).startswith(PNG)


def test_windows_stamped_beyond_pandas_times_are_left_off_the_timeline() -> None:
    ts = [-(2**63), 1_764_000_000_000, 1_764_000_001_000, 1_764_000_002_000, 2**63 - 1]
    windows = trace(["k"] * len(ts), ts)
    spans = {"k": [(1_764_000_001_000, 2**63 - 1), (-(2**63), -(2**62))]}
    assert timeline_png(windows, spans, ["k"]).startswith(PNG)
