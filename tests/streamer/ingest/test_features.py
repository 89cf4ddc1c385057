"""Features matched by name: layouts, mismatch messages, named JSON values, missing values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.ingest.features import FeatureLayout, FeatureMismatchError, fill_previous
from streamer.ingest.windows import sliding_windows, window_feature_names

SERIES = FeatureLayout.of(window_feature_names(["temp", "flow"], 3))
FLAT = FeatureLayout.of(["ret_1", "ret_5", "spread"])


def test_a_cut_series_layout_knows_its_channels_and_steps() -> None:
    assert SERIES.channels == ("temp", "flow") and SERIES.steps == 3 and SERIES.width == 6
    assert SERIES.stride == 2
    assert FLAT.channels == () and FLAT.steps == 1 and FLAT.stride == 3
    # Step names that are not a whole step-major window are plain names.
    assert FeatureLayout.of(["a[t-1]", "a[t-0]", "b[t-0]"]).channels == ()


def test_order_of_matches_by_name_and_names_what_is_wrong() -> None:
    assert FLAT.order_of(["spread", "ret_1", "ret_5"]).tolist() == [1, 2, 0]
    with pytest.raises(FeatureMismatchError) as missing:
        FLAT.order_of(["spread", "ret_1"])
    assert str(missing.value) == "the model's 'ret_5' is missing"
    with pytest.raises(FeatureMismatchError) as renamed:
        FLAT.order_of(["spread", "ret_1", "ret5"])
    assert str(renamed.value) == (
        "the model's 'ret_5' is missing; 'ret5' is not the model's; renamed? 'ret5' → 'ret_5'"
    )
    with pytest.raises(FeatureMismatchError) as extra:
        FLAT.order_of(["spread", "ret_1", "ret_5", "volume"])
    assert str(extra.value) == "'volume' is not the model's"


def test_a_series_mismatch_names_channels_not_their_steps() -> None:
    names = window_feature_names(["temp", "flw"], 3)
    with pytest.raises(FeatureMismatchError) as error:
        SERIES.order_of(names)
    assert str(error.value) == (
        "the model's 'flow' is missing; 'flw' is not the model's; renamed? 'flw' → 'flow'"
    )


def test_positions_accept_feature_or_channel_names() -> None:
    assert FLAT.positions(["ret_5", "spread", "ret_1"]).tolist() == [2, 0, 1]
    # Channels in another order: each step lists flow, then temp.
    assert SERIES.positions(["flow", "temp"]).tolist() == [1, 0, 3, 2, 5, 4]
    with pytest.raises(FeatureMismatchError, match="'pressure' is not the model's"):
        SERIES.positions(["flow", "pressure"])


def test_named_values_come_out_in_the_model_order() -> None:
    problem, values = SERIES.from_named({"flow": [4, 5, 6], "temp": [1, 2, 3]})
    assert problem is None and values == [1, 4, 2, 5, 3, 6]
    problem, values = FLAT.from_named({"spread": 3.0, "ret_5": 2.0, "ret_1": 1.0})
    assert problem is None and values == [1.0, 2.0, 3.0]
    # A cut series may also be given feature by feature.
    flat = {name: float(i) for i, name in enumerate(SERIES.names)}
    assert SERIES.from_named(flat) == (None, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])


@pytest.mark.parametrize(
    ("layout", "values", "reason"),
    [
        (SERIES, {"temp": [1, 2, 3]}, "the model's 'flow' is missing"),
        (
            SERIES,
            {"temp": [1, 2, 3], "flow": [1, 2, 3], "rpm": [1, 2, 3]},
            "'rpm' is not the model's",
        ),
        (SERIES, {"temp": [1, 2, 3], "flow": [1, 2]}, "channel 'flow' is 2 readings"),
        (SERIES, {"temp": [1, 2, 3], "flow": 4}, "channel 'flow' is not a list"),
        (FLAT, {"ret_1": 1, "ret_5": 2, "sprd": 3}, "renamed? 'sprd' → 'spread'"),
    ],
)
def test_named_values_that_do_not_match_say_which(
    layout: FeatureLayout, values: dict[str, object], reason: str
) -> None:
    problem, _ = layout.from_named(values)
    assert problem is not None and reason in problem


def test_fill_previous_takes_the_last_reading_of_the_same_channel() -> None:
    # Two channels over three steps; step-major: t0: a, b; t1: a, b; t2: a, b.
    windows = np.array([[1, 10, np.nan, 11, np.nan, np.nan], [np.nan, 10, 2, 11, 3, 12]])
    assert fill_previous(windows, stride=2) == 3
    np.testing.assert_array_equal(windows[0], [1, 10, 1, 11, 1, 11])
    assert np.isnan(windows[1, 0]), "a window's first step has nothing before it"


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-100, 100), min_size=4 * 2, max_size=4 * 2),
    st.lists(st.booleans(), min_size=4 * 2, max_size=4 * 2),
)
def test_fill_previous_equals_a_forward_fill_of_each_channel(
    readings: list[float], holes: list[bool]
) -> None:
    """Filling a window equals cutting it from the series forward-filled channel by channel."""
    series = np.array(readings).reshape(4, 2)
    series[np.array(holes).reshape(4, 2)] = np.nan
    window = sliding_windows(series, 4).astype(np.float64)
    fill_previous(window, stride=2)
    expected = sliding_windows(pd.DataFrame(series).ffill().to_numpy(), 4)
    np.testing.assert_array_equal(window.astype(np.float32), expected)
