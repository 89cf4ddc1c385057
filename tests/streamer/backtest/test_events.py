"""Detection metrics on hand-counted windows: events per key across interleaved keys, delays in ms
and windows, unknown labels left out, 0/0 ratios, and labelled ranges read from files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamer.backtest.events import Event, evaluate, find_events
from streamer.backtest.labels import labels_from_ranges, read_label_ranges
from streamer.errors import LabelError, MissingFileError

# Two keys interleaved, one window per key per second. Per key, in its own order:
#   a: labels 0 1 1 0 1   flags 0 0 1 1 0   (events a@2000-3000, a@5000; a flag on the first
#                                             event's last window, then a false alarm at 4000)
#   b: labels 1 1 0 0 1   flags 0 0 0 0 1   (events b@1000-2000, b@5000; the second caught at once)
# In stream order the label-1 windows at rows 1-4 are contiguous, but belong to two keys.
KEYS = np.array(["a", "b"] * 5)
TS = np.repeat(np.arange(1, 6) * 1000, 2).astype(np.int64)
LABELS = np.array([0, 1, 1, 1, 1, 0, 0, 0, 1, 1], dtype=np.int8)
FLAGS = np.array([0, 0, 0, 0, 1, 0, 1, 0, 0, 1], dtype=bool)


def test_events_are_runs_per_key_not_per_stream() -> None:
    assert find_events(KEYS, TS, LABELS) == [
        Event("b", 1000, 2000, 2),
        Event("a", 2000, 3000, 2),
        Event("a", 5000, 5000, 1),
        Event("b", 5000, 5000, 1),
    ]


def test_metrics_of_interleaved_keys() -> None:
    metrics = evaluate(KEYS, TS, FLAGS, LABELS)
    assert metrics.windows == metrics.labelled_windows == 10
    assert (metrics.anomalous_windows, metrics.normal_windows, metrics.alerts) == (6, 4, 3)
    assert metrics.precision == pytest.approx(2 / 3)
    assert metrics.recall == pytest.approx(2 / 6)
    assert metrics.f1 == pytest.approx(4 / 9)
    assert (metrics.events, metrics.events_detected) == (4, 2)
    assert metrics.event_recall == 0.5
    assert (metrics.alarm_runs, metrics.alarm_runs_on_events) == (2, 2)
    assert metrics.event_precision == 1.0
    assert metrics.event_f1 == pytest.approx(2 / 3)
    assert metrics.false_alarms == 1
    assert metrics.false_alarms_per_10k == pytest.approx(2500.0)
    # In find_events' order: b@1000 missed, a@2000 caught on its 2nd window, a@5000 missed,
    # b@5000 caught on its 1st.
    assert metrics.delays_ms == (1000, 0)
    assert metrics.delays_windows == (1, 0)
    assert metrics.median_delay_ms == 500.0


def test_flag_on_the_last_window_of_an_event_detects_it() -> None:
    keys = np.array(["k"] * 5)
    ts = np.arange(5, dtype=np.int64) * 1000
    labels = np.array([0, 1, 1, 1, 0], dtype=np.int8)
    metrics = evaluate(keys, ts, np.array([0, 0, 0, 1, 0], dtype=bool), labels)
    assert metrics.events_detected == 1
    assert metrics.delays_ms == (2000,)
    assert metrics.delays_windows == (2,)
    assert (metrics.alarm_runs_on_events, metrics.false_alarms) == (1, 0)


def test_flag_just_after_an_event_is_a_false_alarm() -> None:
    keys = np.array(["k"] * 5)
    ts = np.arange(5, dtype=np.int64) * 1000
    labels = np.array([0, 1, 1, 1, 0], dtype=np.int8)
    metrics = evaluate(keys, ts, np.array([0, 0, 0, 0, 1], dtype=bool), labels)
    assert metrics.events_detected == 0
    assert (metrics.alarm_runs, metrics.alarm_runs_on_events) == (1, 0)
    assert metrics.false_alarms == 1
    assert metrics.false_alarms_per_10k == pytest.approx(1e4 / 2)
    assert metrics.median_delay_ms is None


def test_one_long_alarm_is_one_run_and_alarm_runs_do_not_cross_keys() -> None:
    keys = np.array(["a", "b"] * 4)
    ts = np.repeat(np.arange(4) * 1000, 2).astype(np.int64)
    labels = np.array([0, 0, 1, 0, 1, 0, 0, 0], dtype=np.int8)
    flags = np.ones(8, dtype=bool)
    metrics = evaluate(keys, ts, flags, labels)
    assert (metrics.alarm_runs, metrics.alarm_runs_on_events) == (2, 1)
    assert metrics.event_precision == 0.5
    assert metrics.delays_windows == (0,)


def test_an_alarm_flickering_inside_one_event_is_one_hit_not_one_per_flicker() -> None:
    keys = np.full(12, "k")
    ts = np.arange(12, dtype=np.int64) * 1000
    labels = np.array([0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0], dtype=np.int8)
    flags = np.array([0, 0, 1, 0, 1, 0, 1, 0, 0, 0, 1, 0], dtype=bool)
    metrics = evaluate(keys, ts, flags, labels)
    assert (metrics.alarm_runs, metrics.alarm_runs_on_events, metrics.false_alarm_runs) == (4, 3, 1)
    assert metrics.events_detected == 1
    assert metrics.event_precision == 0.5, "one event caught, one false alarm run: not 3 of 4"
    assert metrics.event_f1 == pytest.approx(2 / 3)


def test_unknown_labels_are_left_out_of_every_metric() -> None:
    keys = np.array(["k"] * 6)
    ts = np.arange(6, dtype=np.int64) * 1000
    labels = np.array([1, -1, 1, 0, -1, 0], dtype=np.int8)
    flags = np.array([0, 1, 1, 0, 1, 0], dtype=bool)
    metrics = evaluate(keys, ts, flags, labels)
    assert (metrics.windows, metrics.labelled_windows) == (6, 4)
    assert (metrics.anomalous_windows, metrics.normal_windows) == (2, 2)
    assert (metrics.alerts, metrics.false_alarms) == (1, 0)
    assert metrics.precision == 1.0
    # The unknown window between the two anomalous ones neither splits the event nor counts.
    assert find_events(keys, ts, labels) == [Event("k", 0, 2000, 2)]
    assert metrics.delays_ms == (2000,)
    assert metrics.delays_windows == (1,)
    assert metrics.alarm_runs == 1


def test_zero_denominators_give_zero_not_nan() -> None:
    keys = np.array(["k"] * 3)
    ts = np.arange(3, dtype=np.int64)
    quiet = evaluate(keys, ts, np.zeros(3, dtype=bool), np.zeros(3, dtype=np.int8))
    unknown = evaluate(keys, ts, np.ones(3, dtype=bool), np.full(3, -1, dtype=np.int8))
    for metrics in (quiet, unknown):
        for name in ("precision", "recall", "f1", "event_recall", "event_precision", "event_f1"):
            assert getattr(metrics, name) == 0.0
        assert metrics.median_delay_ms is None
        json.dumps(metrics.to_dict(), allow_nan=False)
    assert unknown.false_alarms_per_10k == 0.0
    assert (unknown.windows, unknown.labelled_windows, unknown.alerts) == (3, 0, 0)
    nothing = np.array([], dtype=np.int64)
    empty = evaluate(nothing.astype(str), nothing, nothing.astype(bool), nothing.astype(np.int8))
    assert (empty.windows, empty.events, empty.alarm_runs) == (0, 0, 0)


def test_to_dict_is_json_ready() -> None:
    out = evaluate(KEYS.astype(object), TS, FLAGS, LABELS).to_dict()
    assert out["precision"] == 0.6667
    assert out["delays_ms"] == [1000, 0]
    assert out["median_delay_ms"] == 500.0
    text = json.dumps(out, allow_nan=False)
    assert json.loads(text) == out


def test_bad_label_value_names_the_row() -> None:
    with pytest.raises(LabelError, match="row 1 holds 2"):
        evaluate(np.array(["k", "k"]), np.arange(2), np.zeros(2, bool), np.array([0, 2]))


def test_a_million_windows_are_evaluated_vectorised() -> None:
    rng = np.random.default_rng(0)
    n = 1_000_000
    keys = np.array([f"key-{i}" for i in range(100)])[rng.integers(0, 100, n)]
    labels = (rng.random(n) < 0.05).astype(np.int8)
    metrics = evaluate(keys, np.arange(n, dtype=np.int64), rng.random(n) < 0.02, labels)
    assert metrics.windows == n
    assert 0 < metrics.events_detected < metrics.events


def test_labels_from_ranges_with_and_without_key() -> None:
    keys = np.array(["a", "b", "a", "b", "c"])
    ts = np.array([1000, 1000, 2000, 2000, 5000], dtype=np.int64)
    ranges = pd.DataFrame(
        {
            "key": pd.Series(["a", None, "z"], dtype=object),
            "start_ms": np.array([1000, 2000, 0], dtype=np.int64),
            "end_ms": np.array([1000, 2500, 9000], dtype=np.int64),
        }
    )
    assert labels_from_ranges(keys, ts, ranges).tolist() == [1, 0, 1, 1, 0]


def test_labels_from_ranges_bounds_are_inclusive_and_nested_ranges_count() -> None:
    keys = np.array(["k"] * 5)
    ts = np.array([999, 1000, 1500, 3000, 3001], dtype=np.int64)
    ranges = pd.DataFrame(
        {
            "key": pd.Series(["k", "k"], dtype=object),
            "start_ms": np.array([1000, 1200], dtype=np.int64),
            "end_ms": np.array([3000, 1300], dtype=np.int64),
        }
    )
    labels = labels_from_ranges(keys, ts, ranges)
    assert labels.dtype == np.int8
    assert labels.tolist() == [0, 1, 1, 1, 0]


def test_read_csv_ranges_in_epoch_ms_and_iso(tmp_path: Path) -> None:
    path = tmp_path / "ranges.csv"
    path.write_text(
        "start,end,key\n1000,2000,a\n2026-01-01T00:00:01.5Z,2026-01-01T04:00:00+02:00,\n0,10,007\n"
    )
    ranges = read_label_ranges(path)
    assert list(ranges.columns) == ["key", "start_ms", "end_ms"]
    assert ranges["key"].tolist() == ["a", None, "007"]
    assert ranges["start_ms"].tolist() == [1000, 1767225601500, 0]
    assert ranges["end_ms"].tolist() == [2000, 1767232800000, 10]
    assert ranges["start_ms"].dtype == np.int64 and ranges["end_ms"].dtype == np.int64


def test_read_csv_ranges_without_key_column(tmp_path: Path) -> None:
    path = tmp_path / "ranges.csv"
    path.write_text("start,end\n1000,2000\n")
    ranges = read_label_ranges(path)
    assert ranges["key"].tolist() == [None]
    assert ranges[["start_ms", "end_ms"]].to_numpy().tolist() == [[1000, 2000]]


def test_read_json_list_of_ranges(tmp_path: Path) -> None:
    path = tmp_path / "ranges.json"
    path.write_text(
        json.dumps(
            [
                {"start": 1000, "end": 2000.0, "key": "a"},
                {"start": "1970-01-01T00:00:03Z", "end": "4000"},
            ]
        )
    )
    ranges = read_label_ranges(path)
    assert ranges["key"].tolist() == ["a", None]
    assert ranges["start_ms"].tolist() == [1000, 3000]
    assert ranges["end_ms"].tolist() == [2000, 4000]


def test_read_nab_windows_json(tmp_path: Path) -> None:
    path = tmp_path / "combined_windows.json"
    path.write_text(
        json.dumps(
            {
                "realKnownCause/machine_temperature_system_failure.csv": [
                    ["2014-02-19 10:50:00.000000", "2014-02-20 03:30:00.000000"]
                ],
                "artificialNoAnomaly/art_flatline.csv": [],
            }
        )
    )
    ranges = read_label_ranges(path)
    assert ranges["key"].tolist() == [None]
    assert ranges["start_ms"].tolist() == [1392807000000]
    assert ranges["end_ms"].tolist() == [1392867000000]


def test_nab_windows_json_read_for_one_data_file(tmp_path: Path) -> None:
    path = tmp_path / "combined_windows.json"
    path.write_text(
        json.dumps(
            {
                "realKnownCause/nyc_taxi.csv": [["2014-11-01 19:00:00", "2014-11-02 11:00:00"]],
                "realTweets/Twitter_volume_FB.csv": [
                    ["2015-03-01 00:00:00", "2015-03-02 00:00:00"]
                ],
            }
        )
    )
    ranges = read_label_ranges(path, data_name="/data/nab/realKnownCause/nyc_taxi.csv")
    assert ranges["start_ms"].tolist() == [1414868400000]
    assert len(read_label_ranges(path)) == 2, "without a data file: every entry"
    with pytest.raises(LabelError, match=r"no entry for other\.csv among its 2 entries"):
        read_label_ranges(path, data_name="other.csv")


def test_ranges_file_then_labels_end_to_end(tmp_path: Path) -> None:
    path = tmp_path / "ranges.csv"
    path.write_text("start,end,key\n2000,3000,a\n")
    labels = labels_from_ranges(KEYS, TS, read_label_ranges(path))
    assert labels.tolist() == [0, 0, 1, 0, 1, 0, 0, 0, 0, 0]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("r.csv", "begin,end\n1,2\n", "no column 'start'"),
        ("r.csv", "start,stop\n1,2\n", "no column 'end'"),
        ("r.csv", "start,end\n1,2\nyesterday,5\n", "row 1: column 'start' holds 'yesterday'"),
        ("r.csv", "start,end\n1,2\n3,\n", "row 1: column 'end'"),
        ("r.csv", "start,end\n5,4\n", "row 0: end '4' is before start '5'"),
        ("r.json", '[{"start": 1}]', "entry 0 has no 'end'"),
        ("r.json", '[{"start": true, "end": 2}]', "entry 0: column 'start'"),
        ("r.json", '{"f.csv": [["2014-01-01", "2013-01-01"]]}', "'f.csv' entry 0: end"),
        ("r.json", '{"f.csv": [["2014-01-01"]]}', "'f.csv' entry 0 is not a"),
        ("r.json", "{not json", "cannot be read as JSON"),
        ("r.json", "3", "expected a JSON list"),
        ("r.txt", "start,end\n1,2\n", "unknown format"),
    ],
)
def test_bad_range_files_raise_label_error_naming_the_problem(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(LabelError, match=message.replace("[", r"\[")) as caught:
        read_label_ranges(path)
    assert str(path) in str(caught.value)


def test_missing_range_file_is_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match=r"absent\.csv: no such file"):
        read_label_ranges(tmp_path / "absent.csv")


def test_median_delay_of_an_even_count_is_the_midpoint() -> None:
    keys = np.array(["a", "b"] * 3)
    ts = np.repeat(np.arange(3) * 1000, 2).astype(np.int64)
    labels = np.ones(6, dtype=np.int8)
    flags = np.array([1, 0, 0, 0, 0, 1], dtype=bool)
    metrics = evaluate(keys, ts, flags, labels)
    assert metrics.delays_ms == (0, 2000)
    assert metrics.median_delay_ms is not None and math.isclose(metrics.median_delay_ms, 1000.0)
