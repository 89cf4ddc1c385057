"""``report.html``: one self-contained page (inline CSS, plots as embedded PNG) that says what a
backtest found, for a person deciding whether to go live with this model and calibration."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import pandas as pd

from streamer.backtest.labels import labelled_spans
from streamer.backtest.plots import blame_png, parts_png, timeline_png
from streamer.backtest.run import TRACE_COLUMNS, Backtest
from streamer.backtest.summary import sweep_table
from streamer.backtest.times import utc_iso

TIMELINE_KEYS = 4
"""Keys drawn on the timeline: those with the most labelled events, then the most alerts."""
SHOWN_EVENTS = 20
"""Alert events in the page's table (report.json lists more)."""

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.sub { color: #666; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.5em 0.9em; min-width: 9em; }
.card b { display: block; font-size: 1.35em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border-bottom: 1px solid #eee; padding: 0.25em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f5f5f5; padding: 0 0.25em; }
"""


def render_html(backtest: Backtest, report: Mapping[str, Any], ranges: pd.DataFrame | None) -> str:
    """The whole page for ``report`` (``streamer.backtest.summary.summarise``) of ``backtest``."""
    windows = backtest.windows
    spans = labelled_spans(
        windows["key"].to_numpy(), windows["ts"].to_numpy(), windows["label"].to_numpy(), ranges
    )
    parts = [c for c in windows.columns if c not in TRACE_COLUMNS] or ["score"]
    sections = [
        f"<h1>Backtest of {escape(str(report['source']))}</h1>",
        f"<p class=sub>model <code>{escape(report['model']['name'])}</code> version "
        f"<code>{escape(report['model']['version'])}</code>; calibration "
        f"<code>{escape(_calibration(report['calibration']))}</code></p>",
        _cards(report),
        _events_section(report.get("events"), report["counts"]["alerts"]),
        _metrics_section(report),
        _sweep_section(report.get("sweep") or []),
    ]
    if len(windows):
        sections += [
            "<h2>Scores over time</h2>",
            "<p>Score (blue) and the threshold in force (black) per window; red dots are flagged "
            "windows, orange bands labelled anomalies.</p>",
            _img(timeline_png(windows, spans, _timeline_keys(windows, spans)), "timeline"),
            "<h2>Score parts</h2>",
            _img(parts_png(windows, parts), "score parts"),
        ]
    else:
        sections.append("<h2>Scores</h2><p>No window was scored.</p>")
    if report.get("top_channels"):
        sections += [
            "<h2>Blame</h2><p>Each alert's top features' shares of AE1's error, summed per "
            "channel of the series.</p>",
            _img(blame_png(report["top_channels"]), "blame per channel"),
        ]
    elif report["top_features"]:
        sections += ["<h2>Blame</h2>", _img(blame_png(report["top_features"]), "blame")]
    if backtest.alerting.mode == "windows":
        sections.append(_top_alerts(backtest.alerts))
    sections += [
        _per_key_section(report["per_key"]),
        _dead_letters(report["dead_letters"], report["counts"]["dead_letters"]),
        _timings(report["timings"]),
    ]
    body = "\n".join(sections)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>tandem backtest: {escape(str(report['source']))}</title>"
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def _timeline_keys(windows: pd.DataFrame, spans: Mapping[str, Sequence[Any]]) -> list[str]:
    alerts = windows.groupby("key")["flag"].sum()
    ranked = sorted(
        (str(k) for k in alerts.index), key=lambda k: (-len(spans.get(k, ())), -alerts[k], k)
    )
    return ranked[:TIMELINE_KEYS]


def _calibration(calibration: Mapping[str, Any]) -> str:
    method = calibration["method"]
    target = (
        f"quantile {calibration['quantile']}"
        if method == "quantile"
        else f"target rate {calibration['target_rate']:g}"
    )
    scope = "per key" if calibration["per_key"] else "global"
    return f"{method}, {target}, {scope}, window {calibration['window']}"


def _cards(report: Mapping[str, Any]) -> str:
    counts, metrics = report["counts"], report.get("metrics")
    events = report.get("events") or {}
    cards = [
        ("windows", f"{counts['windows']:,}"),
        ("keys", f"{counts['keys']:,}"),
        ("flagged windows", f"{counts['alerts']:,}"),
        ("flagged per 10k", f"{counts['alerts_per_10k']:.1f}"),
    ]
    if events.get("mode") == "events":
        cards.append(("alert events", f"{events['count']:,}"))
    cards.append(("dead letters", f"{counts['dead_letters']:,}"))
    if metrics:
        cards += [
            ("anomalies flagged", f"{metrics['events_detected']} / {metrics['events']}"),
            ("event F1", f"{metrics['event_f1']:.3f}"),
            ("false alarms /10k", f"{metrics['false_alarms_per_10k']:.2f}"),
        ]
        if metrics.get("nab_standard") is not None:
            cards.append(("NAB (standard)", f"{metrics['nab_standard']:.1f}"))
    inner = "".join(f"<div class=card>{escape(n)}<b>{escape(v)}</b></div>" for n, v in cards)
    return f"<div class=cards>{inner}</div>"


def _metrics_section(report: Mapping[str, Any]) -> str:
    metrics = report.get("metrics")
    if not metrics:
        return "<h2>Detection</h2><p>No labels: only counts and scores are reported.</p>"
    delay = metrics.get("median_delay_ms")
    rows = [
        ("labelled anomalies (events)", metrics["events"]),
        ("anomalies detected (any window flagged)", metrics["events_detected"]),
        ("event recall", f"{metrics['event_recall']:.3f}"),
        ("event precision (alarm runs on an event)", f"{metrics['event_precision']:.3f}"),
        ("event F1", f"{metrics['event_f1']:.3f}"),
        ("point precision", f"{metrics['precision']:.3f}"),
        ("point recall", f"{metrics['recall']:.3f}"),
        ("point F1", f"{metrics['f1']:.3f}"),
        ("false alarms", metrics["false_alarms"]),
        ("false alarms per 10,000 normal windows", f"{metrics['false_alarms_per_10k']:.2f}"),
        ("median detection delay", "-" if delay is None else f"{delay / 1000:,.1f} s"),
        (
            "NAB score, standard profile",
            "-" if metrics.get("nab_standard") is None else f"{metrics['nab_standard']:.1f}",
        ),
    ]
    return "<h2>Detection against the labels</h2>" + _table(("metric", "value"), rows)


def _sweep_section(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    header, cells = sweep_table(rows)
    intro = (
        "<h2>Sweep</h2><p>The same scores through a fresh calibrator per calibration setting "
        "(an <code>alerts.</code> setting keeps the run's flags); events: the alert events "
        "those flags make under the setting's <code>[alerts]</code> quiet and cooldown.</p>"
    )
    return intro + _table(header, cells)


def _events_section(events: Mapping[str, Any] | None, flagged: int) -> str:
    """The alert events: how many, how they fall on the labels, and the listed ones."""
    if not events:
        return ""
    if events["mode"] == "windows":
        return (
            '<h2>Alert events</h2><p><code>[alerts] mode = "windows"</code>: one alert record '
            f"per flagged window ({events['alert_records']:,}), no events.</p>"
        )
    text = (
        f"{events['count']:,} events opened from {flagged:,} flagged windows: "
        f"{events['closed']:,} closed, {events['open_at_end']:,} still open at the end "
        f"(quiet {events['quiet']}, cooldown {events['cooldown']} windows of a key)."
    )
    labels = events.get("against_labels")
    if labels:
        text += " " + _events_on_labels(labels)
    section = f"<h2>Alert events</h2><p>{escape(text)}</p>"
    listed = events["list"][:SHOWN_EVENTS]
    if not listed:
        return section
    surprise = any("surprise" in e for e in listed)
    kind = any("kind" in e for e in listed)
    header = ["event id", "key", "opened (UTC)", "last flagged (UTC)", "windows", "flagged"]
    header += ["peak score", "threshold", *(["surprise"] if surprise else [])]
    header += ["blamed features", *(["kind"] if kind else []), "verdict", "state"]
    rows = []
    for e in listed:
        row = [e["event_id"], e["key"], _time(e["opened_utc"]), _time(e["last_flagged_utc"])]
        row += [f"{e['windows']:,}", f"{e['flagged']:,}", f"{e['peak_score']:.2f}"]
        row.append(f"{e['threshold']:.2f}")
        if surprise:
            row.append(f"{e['surprise']:.1f}" if "surprise" in e else "-")
        # A no-break space keeps each feature with its share when the column wraps.
        row.append(", ".join(f"{f['name']}\u00a0{f['share']:.0%}" for f in e["top_features"][:3]))
        if kind:
            row.append(e.get("kind", "-"))
        row += [e["verdict"], "closed" if e["closed"] else "open"]
        rows.append(row)
    shown = (
        f"<p>The {len(listed)} of {events['count']:,} with the highest peak scores "
        f"(report.json lists {len(events['list'])}).</p>"
    )
    return section + shown + _table(header, rows)


def _events_on_labels(labels: Mapping[str, Any]) -> str:
    clauses = [
        f"{labels['on_anomalies']:,} on labelled anomalies",
        f"{labels['false_alarms']:,} false alarms "
        f"({labels['false_alarms_per_10k']:.2f} per 10k normal windows)",
    ]
    if labels["unlabelled"]:
        clauses.append(f"{labels['unlabelled']:,} on unlabelled windows only")
    text = ", ".join(clauses) + "."
    if labels["anomalies"]:
        most = labels["most_events_on_one_anomaly"]
        text += (
            f" {labels['anomalies_caught']} of {labels['anomalies']} labelled anomalies fell in "
            f"an event; none took more than {most} event{'' if most == 1 else 's'}."
        )
    return text


def _time(iso: str | None) -> str:
    """An ISO-8601 time to the second; ``-`` for a stamp the report cannot show as a time."""
    return "-" if iso is None else pd.Timestamp(iso).strftime("%Y-%m-%d %H:%M:%S")


def _top_alerts(alerts: Sequence[Mapping[str, Any]], limit: int = 20) -> str:
    """The highest-scoring alert records of a ``windows``-mode run (one per flagged window)."""
    if not alerts:
        return "<h2>Alerts</h2><p>None.</p>"
    top = sorted(alerts, key=lambda a: -float(a["score"]))[:limit]
    rows = [
        (
            a["alert_id"],
            a["key"],
            _time(utc_iso(a["event_ts"])),
            f"{a['score']:.2f}",
            f"{a['threshold']:.2f}",
            ", ".join(f"{f['name']} {f['share']:.0%}" for f in a["top_features"]),
        )
        for a in top
    ]
    return f"<h2>Highest-scoring alerts ({len(top)} of {len(alerts):,})</h2>" + _table(
        ("alert id", "key", "time (UTC)", "score", "threshold", "blamed features"), rows
    )


def _per_key_section(per_key: Sequence[Mapping[str, Any]], limit: int = 20) -> str:
    if not per_key:
        return ""
    columns = [c for c in per_key[0] if c != "key"]
    rows = [
        [row["key"], *("-" if row[c] is None else row[c] for c in columns)]
        for row in per_key[:limit]
    ]
    shown = f"{min(limit, len(per_key))} of {len(per_key)}"
    return f"<h2>Per key ({shown}, most alerts first)</h2>" + _table(
        ["key", *(c.replace("_", " ") for c in columns)], rows
    )


def _dead_letters(dead: Mapping[str, Any], count: int) -> str:
    if not count:
        return "<h2>Dead letters</h2><p>None: every record decoded.</p>"
    rows = [(d["source"], d["stage"], d["reason"]) for d in dead["first"]]
    return f"<h2>Dead letters ({count:,})</h2>" + _table(("record", "stage", "reason"), rows)


def _timings(timings: Mapping[str, Any]) -> str:
    rows = [("wall time", f"{timings['seconds']:.2f} s")]
    rows += [(stage, f"{s:.2f} s") for stage, s in timings["stage_seconds"].items()]
    return "<h2>Timings</h2>" + _table(("stage", "seconds"), rows)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
