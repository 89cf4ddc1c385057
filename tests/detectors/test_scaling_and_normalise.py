"""Feature scaling and error normalisation: pure numpy, checked against their definitions."""

from __future__ import annotations

import keras
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from detectors.normalise import LogRobustNormaliser, tail_decades, tail_decades_op
from detectors.scaling import FeatureScaler


def test_robust_scaling_centres_on_the_median_with_unit_iqr() -> None:
    rng = np.random.default_rng(0)
    data = rng.standard_t(df=2, size=(5000, 3)).astype(np.float32) * [1.0, 10.0, 0.01] + [0, 5, -3]
    scaled = FeatureScaler.fit(data, "robust").transform(data)
    np.testing.assert_allclose(np.median(scaled, axis=0), 0.0, atol=1e-5)
    q25, q75 = np.quantile(scaled, [0.25, 0.75], axis=0)
    np.testing.assert_allclose(q75 - q25, 1.0, rtol=1e-4)


def test_standard_scaling_gives_zero_mean_unit_std() -> None:
    data = np.random.default_rng(1).normal(3.0, 7.0, size=(4000, 2)).astype(np.float32)
    scaled = FeatureScaler.fit(data, "standard").transform(data)
    np.testing.assert_allclose(scaled.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(scaled.std(axis=0), 1.0, rtol=1e-4)


def test_a_constant_feature_is_not_divided_by_zero() -> None:
    data = np.column_stack([np.full(100, 4.0), np.arange(100.0)]).astype(np.float32)
    scaler = FeatureScaler.fit(data)
    assert scaler.scale[0] == 1.0
    assert np.isfinite(scaler.transform(data)).all()


def test_scaler_round_trips_through_its_dict() -> None:
    data = np.random.default_rng(2).normal(size=(100, 4)).astype(np.float32)
    scaler = FeatureScaler.fit(data)
    again = FeatureScaler.from_dict(scaler.to_dict())
    np.testing.assert_array_equal(again.transform(data), scaler.transform(data))


def test_normalised_held_out_errors_are_centred_with_unit_spread() -> None:
    errors = np.random.default_rng(3).lognormal(mean=-6.0, sigma=0.7, size=20_000)
    z = LogRobustNormaliser.fit(errors)(errors)
    assert abs(float(np.median(z))) < 0.02
    assert abs(float(np.quantile(z, 0.8413)) - 1.0) < 0.05  # one sigma for log-normal errors


def test_normaliser_survives_perfect_reconstructions() -> None:
    normaliser = LogRobustNormaliser.fit(np.zeros(100))
    assert np.isfinite(normaliser(np.array([0.0, 1e-3, 1.0]))).all()


def test_tail_decades_values_and_far_tail() -> None:
    np.testing.assert_allclose(tail_decades(np.array([0.0])), [np.log10(2.0)], rtol=1e-6)
    far = tail_decades(np.array([10.0, 40.0, 100.0]))
    assert np.isfinite(far).all() and far[0] > 23 and far[1] > 349 and far[2] > far[1]


@given(arrays(np.float64, st.integers(2, 50), elements=st.floats(-50, 200)))
def test_tail_decades_is_monotone_and_non_negative(z: np.ndarray) -> None:
    ordered = np.sort(z)
    decades = tail_decades(ordered)
    assert (decades >= 0).all()
    assert (np.diff(decades) >= -1e-5 * np.maximum(decades[1:], 1)).all()


def evaluate(op_result: object) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(op_result), dtype=np.float64)


def test_in_graph_tail_decades_match_the_scipy_reference() -> None:
    z = np.concatenate([np.linspace(-12, 60, 7201), [7.999, 8.0, 8.001, 200.0]]).astype(np.float32)
    graph = evaluate(tail_decades_op(keras.ops.convert_to_tensor(z)))
    reference = tail_decades(z).astype(np.float64)
    np.testing.assert_allclose(graph, reference, rtol=2e-4, atol=2e-5)


@given(arrays(np.float32, st.integers(1, 40), elements=st.floats(-30, 150, width=32)))
def test_in_graph_tail_decades_match_on_random_z(z: np.ndarray) -> None:
    graph = evaluate(tail_decades_op(keras.ops.convert_to_tensor(z)))
    np.testing.assert_allclose(graph, tail_decades(z), rtol=2e-4, atol=2e-5)


def test_in_graph_normalisation_matches_numpy() -> None:
    errors = np.random.default_rng(4).lognormal(-5.0, 1.0, size=1000).astype(np.float32)
    normaliser = LogRobustNormaliser.fit(errors)
    graph = evaluate(normaliser.op(keras.ops.convert_to_tensor(errors)))
    np.testing.assert_allclose(graph, normaliser(errors), rtol=1e-4, atol=1e-4)
