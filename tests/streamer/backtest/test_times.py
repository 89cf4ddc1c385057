"""Epoch-ms stamps as the report's times: any int64 in, a time or none out, never an error."""

from __future__ import annotations

import numpy as np
import pandas as pd

from streamer.backtest.times import FIRST_MS, LAST_MS, utc_iso, utc_text, utc_times


def test_stamps_pandas_can_hold_are_times_and_the_others_none() -> None:
    stamps = np.array([-(2**63), FIRST_MS - 1, FIRST_MS, 0, LAST_MS, LAST_MS + 1, 2**63 - 1])
    times = utc_times(stamps)
    assert times.isna().tolist() == [True, True, False, False, False, True, True]
    assert times[3] == pd.Timestamp(0, tz="UTC")
    assert utc_iso(1_764_000_000_123) == "2025-11-24T16:00:00.123000+00:00"
    assert utc_iso(LAST_MS) is not None and utc_iso(FIRST_MS) is not None
    assert utc_iso(2**63 - 1) is None and utc_iso(-(2**63)) is None


def test_a_table_cell_shows_a_time_or_a_dash() -> None:
    assert utc_text(1_764_000_000_123) == "2025-11-24 16:00:00"
    assert utc_text(1_764_000_000_123, "%H:%M:%S.%f") == "16:00:00.123000"
    assert utc_text(2**63 - 1) == "-" and utc_text(-(2**63)) == "-"
