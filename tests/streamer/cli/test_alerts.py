"""``tandem alerts --format table``: one line per alert record, whatever its stamps."""

from __future__ import annotations

from typing import Any

from streamer.cli.alerts import _format


def alert(event_ts: int) -> dict[str, Any]:
    return {
        "alert_id": "in/0/7",
        "type": "opened",
        "key": "s1",
        "event_ts": event_ts,
        "score": 12.5,
        "threshold": 3.25,
        "top_features": [{"name": "x3", "share": 0.5}],
        "event": {"flagged": 1},
    }


def test_a_table_line_shows_the_time_to_the_millisecond() -> None:
    line = _format(alert(1_764_000_000_123), "table")
    assert line.startswith("2025-11-24 16:00:00.123 opened  s1 ")
    assert line.endswith("x3 (50%)     in/0/7")


def test_a_stamp_beyond_any_calendar_is_a_dash_not_a_crash() -> None:
    """The daemon accepts any int64 ``ts``; ``datetime`` cannot hold 2**63 - 1 ms."""
    line = _format(alert(2**63 - 1), "table")
    assert line.startswith("-" + " " * 23 + "opened  s1 ")
