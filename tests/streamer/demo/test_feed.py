"""The demo's arithmetic: the feed's layout, events against window labels, scoring alerts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from streamer.backtest.events import Event
from streamer.config import CalibrationConfig, KafkaConfig
from streamer.demo.feed import (
    DemoFeed,
    DemoSizes,
    DemoTopics,
    covered_until,
    make_feed,
    score_alerts,
    warmup_windows_for,
)
from streamer.demo.synthetic import injected_events

SMALL = DemoSizes(
    keys=3, channels=2, window=8, train_windows=200, warmup_windows=128, test_steps=800, seed=5
)


@pytest.fixture(scope="module")
def feed() -> DemoFeed:
    return make_feed(SMALL)


def test_injected_events_span_every_window_holding_an_anomalous_step() -> None:
    kinds = ["", "", "spike", "", "frozen", "frozen", "frozen", "level_shift", "", ""]
    frame = pd.DataFrame(
        {
            "key": "s",
            "ts": np.arange(10) * 1000,
            "label": [int(k != "") for k in kinds],
            "kind": kinds,
        }
    )
    events = injected_events(frame)
    assert events == [
        Event("s", 2000, 2000, 1, "spike"),
        Event("s", 4000, 6000, 3, "frozen"),
        Event("s", 7000, 7000, 1, "level_shift"),
    ]
    assert [covered_until(event, window=3, interval_ms=1000) for event in events] == [
        4000,
        8000,
        9000,
    ]


def test_the_feed_trains_then_warms_up_then_holds_the_anomalies(feed: DemoFeed) -> None:
    assert SMALL.steps == 7 + 200 + 128 + 800
    assert feed.frame.groupby("key").size().tolist() == [SMALL.steps] * 3
    per_key = SMALL.steps - SMALL.window + 1
    assert round(per_key * float(SMALL.train_fraction)) == SMALL.train_windows
    assert DemoSizes().train_fraction == "0.2986"
    assert len(feed.replay) == 3 * (per_key - SMALL.train_windows)
    assert feed.events, "the test part holds anomalies"
    for key in np.unique(feed.replay.keys):
        rows = feed.replay.keys == key
        ts = feed.replay.ts_ms[rows]
        first_replayed = (SMALL.window - 1 + SMALL.train_windows) * 1000 + feed.frame["ts"].min()
        assert ts[0] == first_replayed
        assert feed.replay.labels is not None
        labels = feed.replay.labels[rows]
        assert not labels[: SMALL.warmup_windows].any(), "warm-up windows are clean"


def test_window_labels_agree_with_event_spans(feed: DemoFeed) -> None:
    replay = feed.replay
    stamps = zip(replay.keys.tolist(), replay.ts_ms.tolist(), strict=True)
    covered = np.array([feed.event_at(key, ts) is not None for key, ts in stamps])
    np.testing.assert_array_equal(covered, replay.labels == 1)
    assert feed.normal_windows == int((~covered).sum())


def test_score_counts_each_event_once_and_alerts_elsewhere_as_false_alarms(feed: DemoFeed) -> None:
    first = feed.events[0]
    normal = feed.replay.labels == 0
    quiet_key, quiet_ts = str(feed.replay.keys[normal][0]), int(feed.replay.ts_ms[normal][0])
    alerts = [
        {"key": first.key, "event_ts": first.start_ms + 2000},
        {"key": first.key, "event_ts": covered_until(first, SMALL.window)},
        {"key": first.key, "event_ts": first.start_ms + 1000},
        {"key": quiet_key, "event_ts": quiet_ts},
    ]
    score = score_alerts(feed, alerts)
    assert (score.events, score.caught, score.missed) == (len(feed.events), 1, len(feed.events) - 1)
    assert score.false_alarms == 1 and score.alerts == 4
    assert score.delays_ms == [1000]
    assert score.false_alarms_per_10k == pytest.approx(1e4 / feed.normal_windows)
    by_kind = {kind.kind: kind for kind in score.kinds}
    assert by_kind[first.kind].caught == 1
    assert sum(kind.injected for kind in score.kinds) == len(feed.events)


def test_warm_up_covers_the_calibrators_first_threshold() -> None:
    per_key = CalibrationConfig(warmup=1000, refresh=256, per_key=True)
    assert warmup_windows_for(per_key, keys=4) == 1024
    shared = CalibrationConfig(warmup=1000, refresh=100, per_key=False)
    assert warmup_windows_for(shared, keys=4) == 300


def test_demo_topics_are_fresh_and_named_after_the_configured_ones() -> None:
    kafka = KafkaConfig(input_topic="in", alerts_topic="out", group_id="g")
    a, b = DemoTopics.fresh(kafka), DemoTopics.fresh(kafka)
    assert a.run_id != b.run_id
    assert a.input == f"in.demo-{a.run_id}" and a.alerts == f"out.demo-{a.run_id}"
    assert a.state == f"g.demo-{a.run_id}.state"
    env = a.environment()
    assert env["TANDEM_KAFKA_GROUP_ID"] == a.group
    assert env["TANDEM_KAFKA_AUTO_OFFSET_RESET"] == "earliest"
