"""The generated sensor feed: shapes, reproducibility, and the window/index arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.demo.synthetic import sensor_feed


def test_shapes_and_types() -> None:
    feed = sensor_feed(1001, n_keys=7, window=12)
    assert len(feed) == 1001
    assert feed.windows.shape == (1001, 12)
    assert feed.windows.dtype == np.float32
    assert feed.keys.shape == feed.ts_ms.shape == (1001,)
    assert feed.ts_ms.dtype == np.int64
    assert np.isfinite(feed.windows).all()


def test_same_seed_same_feed_other_seed_other_feed() -> None:
    a, b, c = sensor_feed(500, seed=3), sensor_feed(500, seed=3), sensor_feed(500, seed=4)
    np.testing.assert_array_equal(a.windows, b.windows)
    assert not np.array_equal(a.windows, c.windows)


def test_entities_interleave_round_robin() -> None:
    feed = sensor_feed(20, n_keys=4)
    assert list(feed.keys[:5]) == [
        "sensor-000",
        "sensor-001",
        "sensor-002",
        "sensor-003",
        "sensor-000",
    ]


def test_consecutive_windows_of_one_entity_slide_by_one_sample() -> None:
    n_keys, window = 3, 8
    feed = sensor_feed(300, n_keys=n_keys, window=window, sample_interval_ms=500)
    mine = feed.keys == "sensor-001"
    windows, stamps = feed.windows[mine], feed.ts_ms[mine]
    np.testing.assert_array_equal(windows[1:, :-1], windows[:-1, 1:])
    assert (np.diff(stamps) == 500).all()
    assert stamps[0] == 1_764_000_000_000 + (window - 1) * 500


def test_rejects_empty_requests() -> None:
    with pytest.raises(ValueError, match="positive"):
        sensor_feed(0)
