"""Epoch-millisecond stamps as UTC times in a backtest's report and the command line's tables.

The daemon accepts any int64 ``ts``, but pandas (and so the report) can only show times between
1677-09-21 and 2262-04-11 (nanoseconds in an int64). A stamp outside that span keeps its integer
``ts`` everywhere and has no time: NaT in tables, None in report.json, ``-`` on the page, and no
point on the timeline. So an odd clock never stops a report half-written, nor ``tandem score``
or ``tandem alerts --format table`` (``-`` in the table).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

FIRST_MS = int(pd.Timestamp.min.ceil("ms").value // 1_000_000)
"""The earliest epoch-ms stamp shown as a time (1677-09-21)."""
LAST_MS = int(pd.Timestamp.max.floor("ms").value // 1_000_000)
"""The latest epoch-ms stamp shown as a time (2262-04-11)."""


def shown(ts_ms: ArrayLike) -> NDArray[np.bool_]:
    """(n,) whether each of ``ts_ms`` (n,) epoch ms can be shown as a time."""
    stamps = np.asarray(ts_ms, dtype=np.int64)
    return (stamps >= FIRST_MS) & (stamps <= LAST_MS)


def utc_times(ts_ms: ArrayLike) -> pd.DatetimeIndex:
    """``ts_ms`` (n,) epoch ms as (n,) UTC times; NaT where a stamp cannot be shown."""
    stamps = np.asarray(ts_ms, dtype=np.int64)
    inside = shown(stamps)
    times = pd.to_datetime(np.where(inside, stamps, 0), unit="ms", utc=True)
    return pd.DatetimeIndex(times.where(inside))


def utc_iso(ts_ms: int) -> str | None:
    """``ts_ms`` as an ISO-8601 UTC time, or None when it cannot be shown."""
    if not FIRST_MS <= int(ts_ms) <= LAST_MS:
        return None
    return pd.Timestamp(int(ts_ms), unit="ms", tz="UTC").isoformat()


def utc_text(ts_ms: int, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """``ts_ms`` as a UTC time written with ``fmt`` (``strftime``), or ``-`` when it cannot be
    shown: a table cell, where a crash on one odd stamp would lose the whole table."""
    if not FIRST_MS <= int(ts_ms) <= LAST_MS:
        return "-"
    return pd.Timestamp(int(ts_ms), unit="ms", tz="UTC").strftime(fmt)
