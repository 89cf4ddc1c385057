"""The report's plots draw any time the daemon accepts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from streamer.backtest.plots import timeline_png

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


def test_windows_stamped_beyond_pandas_times_are_left_off_the_timeline() -> None:
    ts = [-(2**63), 1_764_000_000_000, 1_764_000_001_000, 1_764_000_002_000, 2**63 - 1]
    windows = trace(["k"] * len(ts), ts)
    spans = {"k": [(1_764_000_001_000, 2**63 - 1), (-(2**63), -(2**62))]}
    assert timeline_png(windows, spans, ["k"]).startswith(PNG)
