"""A backtest's files: ``report.json`` (``streamer.backtest.summary``), ``alerts.csv`` (one row per
alert) and ``report.html`` (``streamer.backtest.html``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from streamer.backtest.html import render_html
from streamer.backtest.run import Backtest


def alerts_frame(backtest: Backtest) -> pd.DataFrame:
    """``alerts.csv``: one row per alert, in order, with its window's label when known."""
    columns = ["alert_id", "key", "event_ts", "time_utc", "score", "threshold"]
    rows = []
    label_of = backtest.windows.set_index(["partition", "offset"])["label"]
    for alert in backtest.alerts:
        source = alert["source"]
        top = alert["top_features"][0] if alert["top_features"] else {"name": "", "share": 0.0}
        rows.append(
            {
                "alert_id": alert["alert_id"],
                "key": alert["key"],
                "event_ts": alert["event_ts"],
                "time_utc": pd.Timestamp(alert["event_ts"], unit="ms", tz="UTC").isoformat(),
                "score": alert["score"],
                "threshold": alert["threshold"],
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
    return pd.DataFrame(rows, columns=None if rows else columns)


def write_report(
    out: Path, backtest: Backtest, report: Mapping[str, Any], ranges: pd.DataFrame | None
) -> list[Path]:
    """Write ``report.json``, ``alerts.csv`` and ``report.html`` into ``out``; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.json", out / "alerts.csv", out / "report.html"]
    paths[0].write_bytes(
        orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    alerts_frame(backtest).to_csv(paths[1], index=False)
    paths[2].write_text(render_html(backtest, report, ranges), encoding="utf-8")
    return paths
