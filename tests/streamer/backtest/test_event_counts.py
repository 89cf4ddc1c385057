"""Events replayed from flags alone against the daemon's ``EventTracker``, and events against
labelled anomalies."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration.base import Flags
from detectors.base import Scores
from streamer.backtest.event_counts import (
    ANOMALY,
    FALSE_ALARM,
    UNLABELLED,
    EventWindows,
    against_labels,
    anomaly_numbers,
    events_of_ids,
    replay_events,
    verdicts,
)
from streamer.backtest.events import find_events
from streamer.config import AlertsConfig
from streamer.events import EventTracker
from streamer.records import SourceRecord, WindowBatch

WIDTH = 3


def tracked(
    keys: list[str], flags: list[bool], cuts: list[int], **alerting: Any
) -> tuple[list[str], set[str]]:
    """Each window's event id, and the ids of the events closed, as ``EventTracker`` makes them
    when ``keys``/``flags`` come in batches ending at ``cuts``."""
    events = EventTracker(
        AlertsConfig(**alerting),
        tuple(f"x{i}" for i in range(WIDTH)),
        model={"name": "m", "version": "sha256:" + "0" * 64},
        calibrator={"method": "spot", "target_rate": 1e-4},
    )
    ids: list[str] = []
    closed: set[str] = set()
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(keys)}), len(keys)]
    for start, end in itertools.pairwise(bounds):
        judgement = events.judge(*batch_of(keys, flags, start, end), detected_ms=0)
        events.apply(judgement)
        ids += judgement.event_ids.tolist()
        closed |= {a.body["event_id"] for a in judgement.records if a.body["type"] == "closed"}
    return ids, closed


def batch_of(
    keys: list[str], flags: list[bool], start: int, end: int
) -> tuple[WindowBatch, Scores, Flags]:
    """Windows ``start``..``end`` as one batch: offsets are rows, flagged ones score 10 + row."""
    n = end - start
    rows = np.arange(start, end)
    flagged = np.array(flags[start:end], dtype=bool)
    score = np.where(flagged, 10.0 + rows, 1.0).astype(np.float32)
    batch = WindowBatch(
        records=[
            SourceRecord("in", 0, int(r), keys[r].encode(), b"", 1_000 * int(r)) for r in rows
        ],
        keys=np.array(keys[start:end]),
        ts_ms=1_000 * rows.astype(np.int64),
        windows=np.zeros((n, WIDTH), np.float32),
        labels=np.full(n, -1, np.int8),
    )

    def blame(picked: Any) -> Any:
        return np.full((len(picked), WIDTH), 1.0 / WIDTH, np.float32)

    scores = Scores(score=score, parts={"ae1": score}, errors={}, blame=blame)
    return batch, scores, Flags(np.full(n, 5.0), flagged)


windows = st.lists(
    st.tuples(st.sampled_from("abc"), st.booleans() | st.just(False)), min_size=0, max_size=200
)


@settings(max_examples=300, deadline=None)
@given(
    windows=windows,
    cuts=st.lists(st.integers(0, 200), max_size=8),
    quiet=st.integers(1, 7),
    cooldown=st.integers(0, 5),
)
def test_replayed_events_are_the_trackers_window_for_window(
    windows: list[tuple[str, bool]], cuts: list[int], quiet: int, cooldown: int
) -> None:
    keys, flags = [k for k, _ in windows], [f for _, f in windows]
    ids, closed_ids = tracked(keys, flags, cuts, quiet=quiet, cooldown=cooldown)
    tracker, names = events_of_ids(np.array(ids, dtype=object), closed_ids)
    replayed = replay_events(np.array(keys, dtype=object), np.array(flags), quiet, cooldown)
    np.testing.assert_array_equal(replayed.member, tracker.member)
    np.testing.assert_array_equal(replayed.closed, tracker.closed)
    opening = [int(np.flatnonzero(tracker.member == i)[0]) for i in range(tracker.count)]
    assert names == [f"in/0/{row}" for row in opening], "numbered in order of opening"


def test_a_long_quiet_keeps_one_event_and_a_cooldown_swallows_flags() -> None:
    keys = np.array(["a"] * 12)
    flags = np.array([1, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0], dtype=bool)
    one = replay_events(keys, flags, quiet=4, cooldown=0)
    assert one.member.tolist() == [0] * 12 and one.tally() == {
        "count": 1,
        "closed": 0,
        "open_at_end": 1,
    }
    short = replay_events(keys, flags, quiet=2, cooldown=0)
    assert short.member.tolist() == [0, 0, 0, 1, 1, 1, -1, 2, 2, 2, 2, -1]
    assert short.closed.tolist() == [True, True, True]
    cooled = replay_events(keys, flags, quiet=2, cooldown=4)
    assert cooled.member.tolist() == [0, 0, 0, -1, -1, -1, -1, 1, 1, 1, 1, -1], "3 swallowed"
    assert cooled.closed.tolist() == [True, True]


def test_no_flag_no_event() -> None:
    empty = replay_events(np.array([], dtype=object), np.array([], dtype=bool), 3, 0)
    assert empty.count == 0 and empty.member.shape == (0,)
    quiet = replay_events(np.array(["a", "b"]), np.zeros(2, dtype=bool), 3, 0)
    assert quiet.member.tolist() == [-1, -1]


def test_events_against_labels() -> None:
    keys = np.array(list("aaaaaabbbbbb"))
    labels = np.array([0, 1, 1, 0, 0, -1, 0, 0, 1, 0, 1, -1], dtype=np.int8)
    member = np.array([0, 0, -1, 1, 1, 2, 3, 3, 3, 3, 3, 4], dtype=np.int64)
    events = EventWindows(member, np.array([True, True, True, True, False]))
    assert verdicts(events, labels).tolist() == [
        ANOMALY,
        FALSE_ALARM,
        UNLABELLED,
        ANOMALY,
        UNLABELLED,
    ]
    assert against_labels(events, keys, labels) == {
        "on_anomalies": 2,
        "false_alarms": 1,
        "unlabelled": 2,
        "false_alarms_per_10k": round(1e4 / 6, 3),
        "anomalies": 3,
        "anomalies_caught": 3,
        "most_events_on_one_anomaly": 1,
    }
    split = EventWindows(np.array([-1, 0, 1, -1, -1, -1, -1, -1, 2, -1, 2, -1]), np.ones(3, bool))
    counted = against_labels(split, keys, labels)
    assert counted["most_events_on_one_anomaly"] == 2 and counted["anomalies_caught"] == 3


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("xyz"), st.sampled_from([-1, 0, 1])), max_size=80))
def test_anomalies_are_the_metrics_events(rows: list[tuple[str, int]]) -> None:
    keys = np.array([k for k, _ in rows], dtype=object)
    labels = np.array([label for _, label in rows], dtype=np.int8)
    numbers = anomaly_numbers(keys, labels)
    events = find_events(keys, np.arange(len(rows), dtype=np.int64) * 1000, labels)
    assert len(set(numbers[numbers >= 0].tolist())) == len(events)
    assert sorted(np.bincount(numbers[numbers >= 0]).tolist()) == sorted(e.windows for e in events)
    assert ((numbers >= 0) == (labels == 1)).all()
