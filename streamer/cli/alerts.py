"""``tandem alerts``: read the alerts topic as a person or a script wants it.

Follows new alert records (or reads from the beginning), filters by entity key, record type or
minimum score, prints JSON lines or a table, and drops records whose ``alert_id`` it has already
shown: after a crash the daemon may publish a record twice, always with the same id. In events
mode the records are each event's ``opened``, ``updated`` and ``closed``; ``--type opened`` shows
one line per anomaly.
"""

from __future__ import annotations

import argparse
import signal
from types import FrameType
from typing import Any

import orjson

from streamer.backtest.times import utc_text
from streamer.broker.alert_reader import read_alerts
from streamer.cli.options import add_config_option
from streamer.config import TandemConfig


def add_alerts_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    alerts = commands.add_parser("alerts", help="show alerts from the alerts topic")
    add_config_option(alerts)
    alerts.add_argument("--from-beginning", action="store_true", help="start at the oldest alert")
    alerts.add_argument(
        "--no-follow", action="store_true", help="stop once no alert has arrived for --idle-s"
    )
    alerts.add_argument("--idle-s", type=float, default=5.0)
    alerts.add_argument("--key", action="append", help="only these entities (repeatable)")
    alerts.add_argument("--min-score", type=float, help="only alerts scoring at least this")
    alerts.add_argument(
        "--type",
        action="append",
        choices=["opened", "updated", "closed", "window"],
        help="only these record types (repeatable; default: all)",
    )
    alerts.add_argument("--format", choices=["jsonl", "table"], default="jsonl")
    alerts.set_defaults(command=alerts_command)


def alerts_command(args: argparse.Namespace, config: TandemConfig) -> int:
    keys, types = set(args.key or ()), set(args.type or ())
    seen: set[str] = set()
    if args.format == "table":
        print(
            f"{'time (UTC)':<23} {'type':<7} {'key':<16} {'score':>8} {'threshold':>9}  "
            f"{'flagged':>7}  top feature  alert_id"
        )
    stream = read_alerts(
        config.kafka, args.from_beginning, None if not args.no_follow else args.idle_s
    )
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for alert in stream:
            if alert["alert_id"] in seen:
                continue
            seen.add(alert["alert_id"])
            if keys and alert["key"] not in keys:
                continue
            if types and alert.get("type", "window") not in types:
                continue
            if args.min_score is not None and alert["score"] < args.min_score:
                continue
            print(_format(alert, args.format), flush=True)
    finally:
        stream.close()  # closes the consumer, which leaves its group, however the loop ended
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _interrupt(number: int, frame: FrameType | None) -> None:
    """SIGINT and SIGTERM both end the viewer through ``KeyboardInterrupt``, so its consumer
    leaves its group: a process started in the background inherits SIGINT ignored, and SIGTERM's
    default ends it at once, leaving a member that keeps the group alive (and undeletable)
    until its session times out."""
    raise KeyboardInterrupt


def _format(alert: dict[str, Any], fmt: str) -> str:
    if fmt == "jsonl":
        return orjson.dumps(alert).decode()
    when = utc_text(alert["event_ts"], "%Y-%m-%d %H:%M:%S.%f")[:23]
    top = alert["top_features"][0] if alert["top_features"] else {"name": "-", "share": 0.0}
    blame = f"{top['name']} ({top['share']:.0%})"
    kind = alert.get("type", "window")
    flagged = alert["event"]["flagged"] if "event" in alert else 1
    return (
        f"{when:<23} {kind:<7} {alert['key']:<16} {alert['score']:>8.2f} "
        f"{alert['threshold']:>9.2f}  {flagged:>7}  {blame:<12} {alert['alert_id']}"
    )
