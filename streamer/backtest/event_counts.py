"""Alert events as a backtest counts them: which windows each event holds, and how the events
fall on the labelled anomalies.

A run's events come from its ``event_id`` column (``events_of_ids``). A sweep setting's come from
``replay_events``, which re-runs ``streamer.events``' lifecycle on keys and flags alone, without
building records: per key, an event opens at a flagged window when the key has no open event
and no cooldown left, holds the key's windows that follow, and closes at the ``quiet``-th
unflagged window of its key in a row (that window is its last); the key's next ``cooldown``
windows open nothing. It must agree with ``EventTracker`` window for window:
tests/streamer/backtest/test_event_counts.py holds it to that on random flag streams.

Against labels (1 anomalous, 0 normal, -1 unknown), an event is *on an anomaly* when any of its
windows is labelled 1, a *false alarm* when its labelled windows are all 0, else *unlabelled*.
An *anomaly* is one of ``streamer.backtest.events``' events: a maximal run of anomalous windows
of one key among the key's labelled windows; an event *catches* it when it holds any of its
windows.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

ANOMALY = "anomaly"
FALSE_ALARM = "false alarm"
UNLABELLED = "unlabelled"


@dataclass(frozen=True)
class EventWindows:
    """k events over n windows in stream order: ``member`` (n,) int64, the number (0..k-1, in
    order of opening) of the event each window belongs to, -1 for none; ``closed`` (k,) bool,
    whether each event closed before the stream ended."""

    member: NDArray[np.int64]
    closed: NDArray[np.bool_]

    @property
    def count(self) -> int:
        return len(self.closed)

    def tally(self) -> dict[str, int]:
        """Events opened, closed, and still open when the stream ended."""
        closed = int(self.closed.sum())
        return {"count": self.count, "closed": closed, "open_at_end": self.count - closed}


def events_of_ids(
    event_ids: NDArray[Any], closed_ids: Collection[str]
) -> tuple[EventWindows, list[str]]:
    """The events of a backtest's ``event_id`` column (n,) of str ("" for no event), numbered by
    their first window (their opening), and their ids in that order; an event closed when its
    id is in ``closed_ids``."""
    ids = np.asarray(event_ids, dtype=object)
    member = np.full(len(ids), -1, np.int64)
    inside = np.flatnonzero(ids != "")
    codes, names = pd.factorize(ids[inside])
    member[inside] = codes
    listed = [str(name) for name in names]
    closed = np.fromiter((name in closed_ids for name in listed), bool, count=len(listed))
    return EventWindows(member, closed), listed


def replay_events(
    keys: NDArray[Any], flags: NDArray[np.bool_], quiet: int, cooldown: int
) -> EventWindows:
    """The events ``EventTracker`` would make of windows (n,) of ``keys`` flagged ``flags``, in
    stream order, under ``[alerts]`` ``quiet`` and ``cooldown``. O(n log n) in numpy plus a
    Python step per event."""
    keys, flags = np.asarray(keys), np.asarray(flags, dtype=bool)
    if keys.shape != flags.shape or keys.ndim != 1:
        raise ValueError(f"keys {keys.shape} and flags {flags.shape}: expected (n,) each")
    member = np.full(len(flags), -1, np.int64)
    rows_of = pd.Series(keys).groupby(keys, sort=False).indices if flags.any() else {}
    events: list[tuple[int, NDArray[np.intp], bool]] = []
    for key in pd.unique(keys[flags]):
        rows = np.asarray(rows_of[key], dtype=np.intp)
        for first, last, closed in _key_events(
            np.flatnonzero(flags[rows]), len(rows), quiet, cooldown
        ):
            events.append((int(rows[first]), rows[first : last + 1], closed))
    events.sort(key=lambda event: event[0])
    for number, (_, rows, _) in enumerate(events):
        member[rows] = number
    return EventWindows(member, np.array([closed for _, _, closed in events], dtype=bool))


def _key_events(
    flagged: NDArray[np.intp], windows: int, quiet: int, cooldown: int
) -> list[tuple[int, int, bool]]:
    """(first, last, closed) positions of the events of one key whose ``windows`` windows are
    flagged at positions ``flagged`` (sorted). An event absorbs the flags no more than ``quiet``
    windows apart and closes ``quiet`` windows after its last flag."""
    goes_quiet = np.flatnonzero(np.diff(flagged) > quiet)
    events = []
    may_open = 0
    while (at := int(np.searchsorted(flagged, may_open))) < len(flagged):
        end = int(np.searchsorted(goes_quiet, at))
        last_flag = int(flagged[goes_quiet[end]] if end < len(goes_quiet) else flagged[-1])
        close = last_flag + quiet
        if close >= windows:
            events.append((int(flagged[at]), windows - 1, False))
            break
        events.append((int(flagged[at]), close, True))
        may_open = close + cooldown + 1
    return events


def verdicts(events: EventWindows, labels: NDArray[np.int8]) -> NDArray[np.str_]:
    """Each event's verdict against ``labels`` (n,): ``ANOMALY``, ``FALSE_ALARM`` or
    ``UNLABELLED`` (module docstring)."""
    inside = events.member >= 0
    member, label = events.member[inside], np.asarray(labels)[inside]
    anomalous = np.bincount(member, weights=label == 1, minlength=events.count) > 0
    normal = np.bincount(member, weights=label == 0, minlength=events.count) > 0
    out = np.full(events.count, UNLABELLED, dtype=object)
    out[normal] = FALSE_ALARM
    out[anomalous] = ANOMALY
    return out.astype(str)


def against_labels(
    events: EventWindows, keys: NDArray[Any], labels: NDArray[np.int8]
) -> dict[str, Any]:
    """How ``events`` fall on the labelled anomalies of windows (n,) of ``keys`` labelled
    ``labels``: events on an anomaly, false-alarm and unlabelled events, false-alarm events per
    10,000 normal windows, the anomalies, how many an event caught, and the most events that
    one anomaly took."""
    labels = np.asarray(labels)
    verdict = verdicts(events, labels)
    false_alarms = int((verdict == FALSE_ALARM).sum())
    normal = int((labels == 0).sum())
    anomaly = anomaly_numbers(keys, labels)
    anomalies = int(anomaly.max()) + 1 if len(anomaly) else 0
    pairs = (anomaly >= 0) & (events.member >= 0)
    touched = np.unique(anomaly[pairs] * max(events.count, 1) + events.member[pairs])
    per_anomaly = np.bincount(touched // max(events.count, 1), minlength=anomalies)
    return {
        "on_anomalies": int((verdict == ANOMALY).sum()),
        "false_alarms": false_alarms,
        "unlabelled": int((verdict == UNLABELLED).sum()),
        "false_alarms_per_10k": round(1e4 * false_alarms / normal, 3) if normal else 0.0,
        "anomalies": anomalies,
        "anomalies_caught": int((per_anomaly > 0).sum()),
        "most_events_on_one_anomaly": int(per_anomaly.max()) if anomalies else 0,
    }


def anomaly_numbers(keys: NDArray[Any], labels: NDArray[np.int8]) -> NDArray[np.int64]:
    """The anomaly (n,) each window of ``keys`` labelled ``labels`` (n,) belongs to, numbered
    0.. in no particular order, -1 outside any: maximal runs of windows labelled 1 in each key's
    labelled windows, as ``streamer.backtest.events.find_events`` counts them."""
    keys, labels = np.asarray(keys), np.asarray(labels)
    out = np.full(len(labels), -1, np.int64)
    rows = np.flatnonzero(labels != -1)
    codes = pd.factorize(keys[rows])[0]
    rows = rows[np.argsort(codes, kind="stable")]
    grouped = np.sort(codes, kind="stable")
    anomalous = labels[rows] == 1
    continues = np.zeros(len(rows), dtype=bool)
    continues[1:] = anomalous[:-1] & (grouped[1:] == grouped[:-1])
    starts = anomalous & ~continues
    out[rows[anomalous]] = (np.cumsum(starts) - 1)[anomalous]
    return out
