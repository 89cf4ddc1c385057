"""A backtest's files: ``report.json`` (``streamer.backtest.summary``), ``alerts.csv`` (one row per
alert), ``report.html`` (``streamer.backtest.html``) and ``windows.parquet`` (one row per window
scored, so a user can see why any window was or was not flagged)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from streamer.backtest.html import render_html
from streamer.backtest.run import TRACE_COLUMNS, Backtest
from streamer.backtest.times import utc_iso, utc_times

ALERT_COLUMNS_BEFORE_PARTS = (
    "alert_id",
    "type",
    "event_id",
    "key",
    "event_ts",
    "time_utc",
    "score",
    "threshold",
    "surprise",
)
ALERT_COLUMNS_AFTER_PARTS = (
    "top_feature",
    "top_share",
    "label",
    "kind",
    "kind_confidence",
    "partition",
    "offset",
)


def alerts_frame(backtest: Backtest) -> pd.DataFrame:
    """``alerts.csv``: one row per alert record, in order, with its window's label when known (an
    event record's: its first flagged window's). The columns are the same whether there are
    alerts or not, in either alert mode: the fixed ones around a ``part_<name>`` per score part
    of the detector."""
    columns = [
        *ALERT_COLUMNS_BEFORE_PARTS,
        *(f"part_{name}" for name in _parts(backtest)),
        *ALERT_COLUMNS_AFTER_PARTS,
    ]
    rows = []
    label_of = backtest.windows.set_index(["partition", "offset"])["label"]
    for alert in backtest.alerts:
        source = alert["source"]
        top = alert["top_features"][0] if alert["top_features"] else {"name": "", "share": 0.0}
        rows.append(
            {
                "alert_id": alert["alert_id"],
                "type": alert["type"],
                "event_id": alert.get("event_id", ""),
                "key": alert["key"],
                "event_ts": alert["event_ts"],
                "time_utc": utc_iso(alert["event_ts"]),
                "score": alert["score"],
                "threshold": alert["threshold"],
                "surprise": alert.get("surprise", float("nan")),
                **{f"part_{name}": value for name, value in alert["parts"].items()},
                "top_feature": top["name"],
                "top_share": top["share"],
                "label": int(label_of.get((source["partition"], source["offset"]), -1)),
                "kind": alert.get("kind", ""),
                "kind_confidence": alert.get("kind_confidence", float("nan")),
                "partition": source["partition"],
                "offset": source["offset"],
            }
        )
    return pd.DataFrame(rows, columns=columns)


def windows_frame(backtest: Backtest) -> pd.DataFrame:
    """``windows.parquet``: every window scored, in stream order: its position, ``key``, ``ts``
    (epoch ms) and ``time_utc`` (NaT where ``streamer.backtest.times`` cannot show it),
    ``label`` (-1 unknown), ``score`` and one column per score part, the ``threshold`` in force
    (NaN in warm-up), ``surprise`` (NaN where none), ``flag`` and ``event_id`` (the alert event
    the window belongs to; empty if none)."""
    windows = backtest.windows.copy()
    windows.insert(
        list(windows.columns).index("ts") + 1,
        "time_utc",
        utc_times(windows["ts"].to_numpy()),
    )
    return windows


def _parts(backtest: Backtest) -> list[str]:
    """The detector's score parts, as the trace names its columns (none if nothing scored)."""
    return [column for column in backtest.windows.columns if column not in TRACE_COLUMNS]


def write_report(
    out: Path, backtest: Backtest, report: Mapping[str, Any], ranges: pd.DataFrame | None
) -> list[Path]:
    """Write ``report.json``, ``alerts.csv``, ``report.html`` and ``windows.parquet`` into
    ``out``; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.json", out / "alerts.csv", out / "report.html", out / "windows.parquet"]
    paths[0].write_bytes(
        orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    alerts_frame(backtest).to_csv(paths[1], index=False)
    paths[2].write_text(render_html(backtest, report, ranges), encoding="utf-8")
    windows_frame(backtest).to_parquet(paths[3], index=False)
    return paths
