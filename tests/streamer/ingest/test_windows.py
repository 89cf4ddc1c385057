"""Window arithmetic: which steps a window covers, its stamp, its label, its feature names."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.ingest.windows import (
    sliding_windows,
    window_any,
    window_count,
    window_feature_names,
    window_last_steps,
)


@pytest.mark.parametrize(
    ("steps", "window", "stride", "expected"),
    [(10, 3, 1, 8), (10, 10, 1, 1), (9, 10, 1, 0), (10, 3, 2, 4), (10, 3, 7, 2), (0, 1, 1, 0)],
)
def test_window_count(steps: int, window: int, stride: int, expected: int) -> None:
    assert window_count(steps, window, stride) == expected


def test_window_last_steps_are_the_stamp_rows() -> None:
    assert window_last_steps(10, 3, 2).tolist() == [2, 4, 6, 8]


@given(
    steps=st.integers(0, 60),
    channels=st.integers(1, 4),
    window=st.integers(1, 12),
    stride=st.integers(1, 5),
)
def test_window_i_holds_steps_i_stride_onwards_flattened_step_major(
    steps: int, channels: int, window: int, stride: int
) -> None:
    series = np.arange(steps * channels, dtype=np.float32).reshape(steps, channels)
    windows = sliding_windows(series, window, stride)
    assert windows.shape == (window_count(steps, window, stride), window * channels)
    for i, row in enumerate(windows):
        np.testing.assert_array_equal(row, series[i * stride : i * stride + window].ravel())
    last = window_last_steps(steps, window, stride)
    np.testing.assert_array_equal(windows[:, -channels:], series[last]) if len(last) else None


@given(
    flags=st.lists(st.integers(0, 1), min_size=0, max_size=60),
    window=st.integers(1, 10),
    stride=st.integers(1, 4),
)
def test_a_window_is_labelled_when_any_of_its_steps_is(
    flags: list[int], window: int, stride: int
) -> None:
    array = np.array(flags, dtype=np.int8)
    got = window_any(array, window, stride)
    expected = [int(array[s : s + window].any()) for s in range(0, len(flags) - window + 1, stride)]
    assert got.tolist() == expected


def test_feature_names_follow_the_flattening() -> None:
    assert window_feature_names(["a", "b"], 2) == ("a[t-1]", "b[t-1]", "a[t-0]", "b[t-0]")


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="2-D"):
        sliding_windows(np.zeros(5), 2)
    with pytest.raises(ValueError, match="at least 1"):
        window_count(5, 0, 1)
