"""Replay pacing and time order, without a broker."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.broker.replay import Pace
from streamer.ingest.tables import WindowTable


def test_a_rate_spaces_windows_evenly_and_a_speed_follows_the_data_time() -> None:
    ts = np.array([1_000, 1_500, 3_000, 3_000, 11_000], dtype=np.int64)
    np.testing.assert_allclose(Pace(rate=4).due_s(ts), [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(Pace(speed=1).due_s(ts), [0, 0.5, 2.0, 2.0, 10.0])
    np.testing.assert_allclose(Pace(speed=10).due_s(ts), [0, 0.05, 0.2, 0.2, 1.0])
    assert Pace().due_s(ts) is None
    assert Pace(speed=1).describe() == "in real time"
    assert Pace(speed=4).describe() == "at 4x the data's time"
    assert Pace(rate=2000).describe() == "at 2,000 windows/s"


@pytest.mark.parametrize("bad", [{"rate": -1.0}, {"speed": -2.0}, {"rate": 5.0, "speed": 2.0}])
def test_a_pace_is_a_rate_or_a_speed(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="a pace is a rate or a speed"):
        Pace(**bad)


def test_windows_in_time_order_keep_file_order_among_equal_times() -> None:
    table = WindowTable(
        keys=np.array(["a", "a", "b", "b"]),
        ts_ms=np.array([2, 3, 1, 3], dtype=np.int64),
        windows=np.arange(8, dtype=np.float32).reshape(4, 2),
        feature_names=("x", "y"),
        labels=np.array([0, 1, 0, 0], dtype=np.int8),
    )
    ordered = table.in_time_order()
    assert ordered.keys.tolist() == ["b", "a", "a", "b"]
    assert ordered.ts_ms.tolist() == [1, 2, 3, 3]
    assert ordered.windows[:, 0].tolist() == [4.0, 0.0, 2.0, 6.0]
    assert ordered.labels is not None and ordered.labels.tolist() == [0, 0, 1, 0]
