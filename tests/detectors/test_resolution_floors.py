"""The floors of the scaler and of the score normaliser come from the data's own resolution.

Each case is one a constant floor got wrong: a quantised or resting channel scaled to thousands, a
flat or mostly perfect held-out error distribution scored in 1e13 decades. Continuous data, the
ordinary case, must scale and normalise exactly as before.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detectors import bundle
from detectors.cascade import CascadeDetector
from detectors.normalise import LogRobustNormaliser, tail_decades
from detectors.scaling import FeatureScaler, ScalerMethod


def former_scale(data: np.ndarray, method: ScalerMethod) -> np.ndarray:
    """The scale before resolution floors: IQR or std, 1 where below float32 eps."""
    values = np.asarray(data, dtype=np.float64)
    if method == "robust":
        q25, center, q75 = np.quantile(values, [0.25, 0.5, 0.75], axis=0)
        spread = q75 - q25
    else:
        center, spread = values.mean(axis=0), values.std(axis=0)
    tiny = np.finfo(np.float32).eps * np.maximum(1.0, np.abs(center))
    return np.where(spread > tiny, spread, 1.0).astype(np.float32)


def former_normaliser(errors: np.ndarray) -> LogRobustNormaliser:
    """The normaliser as fitted before: floor 1e-6 x median, spread floored at 1e-6."""
    values = np.asarray(errors, dtype=np.float64)
    floor = max(float(np.median(values)) * 1e-6, float(np.finfo(np.float32).tiny))
    logs = np.log(values + floor)
    median = float(np.median(logs))
    mad = float(np.median(np.abs(logs - median)))
    return LogRobustNormaliser(floor=floor, median=median, mad=max(mad, 1e-6))


def decades(normaliser: LogRobustNormaliser, errors: object) -> np.ndarray:
    return tail_decades(normaliser(np.asarray(errors, dtype=np.float64))).astype(np.float64)


# The scaler ----------------------------------------------------------------------------------

CONTINUOUS = {
    "normal": lambda rng, n: rng.normal(3.0, 7.0, size=(n, 3)),
    "student_t2": lambda rng, n: rng.standard_t(2, size=(n, 3)),
    "lognormal": lambda rng, n: rng.lognormal(0.0, 1.0, size=(n, 3)),
    "uniform": lambda rng, n: rng.uniform(-1.0, 5.0, size=(n, 3)),
    "exponential": lambda rng, n: rng.exponential(2.0, size=(n, 3)),
}


@pytest.mark.parametrize("method", ["robust", "standard"])
@pytest.mark.parametrize("n", [60, 400, 5000])
@pytest.mark.parametrize("shape", sorted(CONTINUOUS))
def test_continuous_channels_scale_exactly_as_before(
    shape: str, n: int, method: ScalerMethod
) -> None:
    for seed in range(5):
        data = CONTINUOUS[shape](np.random.default_rng(seed), n).astype(np.float32)
        scaler = FeatureScaler.fit(data, method)
        np.testing.assert_array_equal(scaler.scale, former_scale(data, method))


def test_a_jittered_binary_channel_scales_its_step_to_order_one() -> None:
    """85 % of values at 0, 15 % at 1, all with 0.001 of jitter: the IQR is the jitter."""
    rng = np.random.default_rng(0)
    level = (rng.random(2000) < 0.15).astype(np.float64)
    channel = (level + rng.normal(0.0, 1e-3, size=2000)).astype(np.float32)[:, None]
    assert former_scale(channel, "robust")[0] < 0.01
    scaler = FeatureScaler.fit(channel, "robust")
    step = scaler.transform(np.array([[1.0]], np.float32)) - scaler.transform(
        np.array([[0.0]], np.float32)
    )
    assert 1.0 <= float(step[0, 0]) <= 10.0


def test_an_exactly_quantised_channel_scales_to_its_quantum() -> None:
    """Levels 0.328 apart with most values on one: the IQR is 0 or a fraction of the quantum."""
    rng = np.random.default_rng(1)
    levels = rng.choice([-1, 0, 1, 2], p=[0.15, 0.6, 0.2, 0.05], size=400) * 0.328
    scaler = FeatureScaler.fit(levels.astype(np.float32)[:, None], "robust")
    np.testing.assert_allclose(scaler.scale, [0.328], rtol=1e-5)


def test_a_channel_resting_on_a_level_scales_its_steps_to_a_few_units() -> None:
    """SKAB's Volume Flow RateRMS: 32 with 0.001 of jitter, a fifth of the time at 31 or 33."""
    rng = np.random.default_rng(2)
    level = rng.choice([31.0, 32.0, 33.0], p=[0.05, 0.8, 0.15], size=400)
    channel = (level + rng.normal(0.0, 1e-3, size=400)).astype(np.float32)[:, None]
    scaled = FeatureScaler.fit(channel, "robust").transform(channel)
    assert former_scale(channel, "robust")[0] < 0.01
    assert 1.0 <= float(np.abs(scaled).max()) <= 10.0


def test_rare_spikes_on_a_resting_channel_scale_to_their_own_size() -> None:
    """92 % exact zeros and spikes of 0.2 to 3: IQR 0, the spikes set the scale."""
    rng = np.random.default_rng(3)
    spikes = rng.uniform(0.2, 3.0, size=600) * (rng.random(600) < 0.08)
    scaled = FeatureScaler.fit(spikes.astype(np.float32)[:, None], "robust").transform(
        spikes.astype(np.float32)[:, None]
    )
    assert 1.0 <= float(scaled.max()) <= 10.0


def test_the_standard_scaler_is_floored_at_the_resolution_too() -> None:
    """One step of 1.0 in 1000 values: the std is 0.03, the step is 1."""
    channel = np.zeros((1000, 1), np.float32)
    channel[500] = 1.0
    assert former_scale(channel, "standard")[0] < 0.05
    np.testing.assert_allclose(FeatureScaler.fit(channel, "standard").scale, [1.0])


@pytest.mark.parametrize("method", ["robust", "standard"])
def test_a_constant_channel_gets_scale_one_beside_a_varying_one(method: ScalerMethod) -> None:
    data = np.column_stack([np.full(300, 1e6), np.linspace(0, 1, 300)]).astype(np.float32)
    scaler = FeatureScaler.fit(data, method)
    assert scaler.scale[0] == 1.0
    np.testing.assert_allclose(scaler.scale[1], former_scale(data, method)[1])


# The score normaliser -------------------------------------------------------------------------


def test_mostly_perfect_held_out_errors_give_modest_finite_scores() -> None:
    """80 % of held-out windows reconstructed exactly: later ordinary windows score a few
    decades (not 1e13), a window 100 times worse than typical scores well above them all."""
    rng = np.random.default_rng(4)

    def errors(n: int) -> np.ndarray:
        return np.where(rng.random(n) < 0.8, 0.0, rng.lognormal(-6.0, 0.7, size=n))

    normaliser = LogRobustNormaliser.fit(errors(2000))
    later = decades(normaliser, errors(20_000))
    assert np.isfinite(later).all() and later.max() < 50
    assert decades(former_normaliser(errors(2000)), [np.exp(-6.0)])[0] > 1e12
    anomalous = decades(normaliser, [100 * np.exp(-6.0)])[0]
    assert anomalous > later.max() + 3 and anomalous > 3 * np.quantile(later, 0.99)


def test_square_wave_held_out_errors_give_bounded_scores() -> None:
    """Two repeated errors (flat windows at each level) and a few edge windows."""
    rng = np.random.default_rng(5)
    held_out = np.concatenate(
        [np.full(700, 0.010), np.full(200, 0.012), rng.uniform(0.02, 0.1, 100)]
    )
    normaliser = LogRobustNormaliser.fit(held_out)
    assert decades(normaliser, held_out).max() < 10
    new = decades(normaliser, [0.5, 5.0])
    assert np.isfinite(new).all() and new[0] < 50 and new[1] > new[0]


def test_flat_held_out_errors_give_ten_times_the_error_log10_n_decades() -> None:
    for n in (20, 1000, 50_000):
        normaliser = LogRobustNormaliser.fit(np.full(n, 0.25))
        scores = decades(normaliser, [0.25, 2.5, 25.0, 2.5e5])
        assert scores[0] < 0.31
        np.testing.assert_allclose(scores[1], np.log10(n + 1), rtol=1e-3)
        assert scores[1] < scores[2] < scores[3] < 50 * np.log10(n + 1)


def test_all_zero_held_out_errors_give_finite_increasing_scores() -> None:
    normaliser = LogRobustNormaliser.fit(np.zeros(200))
    scores = decades(normaliser, [0.0, 1e-12, 1e-6, 1.0])
    assert np.isfinite(scores).all() and (np.diff(scores) > 0).all() and scores[0] < 0.31


@pytest.mark.parametrize("sigma", [0.2, 0.7, 2.0])
def test_log_normal_held_out_errors_normalise_exactly_as_before(sigma: float) -> None:
    for seed in range(5):
        errors = np.random.default_rng(seed).lognormal(-5.0, sigma, size=3000)
        assert LogRobustNormaliser.fit(errors) == former_normaliser(errors)


# Bundles ---------------------------------------------------------------------------------------


def test_bundle_entries_keep_their_keys() -> None:
    """Bundles written before and after the floors hold the same fields, so either tandem
    reads the other's."""
    scaler = FeatureScaler.fit(np.random.default_rng(6).normal(size=(100, 3)).astype(np.float32))
    assert set(scaler.to_dict()) == {"method", "center", "scale"}
    normaliser = LogRobustNormaliser.fit(np.random.default_rng(7).lognormal(size=100))
    assert set(normaliser.to_dict()) == {"floor", "median", "mad"}


def test_a_bundle_with_former_floors_loads_and_scores_as_it_did(
    univariate_trained: CascadeDetector, univariate: np.ndarray, tmp_path: Path
) -> None:
    """A bundle written before the floors (here: its normalisation replaced by a flat one the
    former rule fitted, spread 1e-6) loads and keeps its stored floors: no refit on load."""
    detector = univariate_trained
    detector.save(tmp_path / "current")
    manifest = json.loads((tmp_path / "current" / "bundle.json").read_text())
    old = {"floor": 1e-8, "median": float(np.log(0.01 + 1e-8)), "mad": 1e-6}
    manifest["normalisation"]["ae2"] = old
    for key in ("format", "files", "version"):
        manifest.pop(key)
    models = {"ae1": detector.ae1_, "ae2": detector.ae2_}
    bundle.write_bundle(tmp_path / "former", models, manifest)

    loaded = CascadeDetector.load(tmp_path / "former", device="cpu")
    assert loaded.normalisers_["ae2"] == LogRobustNormaliser.from_dict(old)
    scores = loaded.score(univariate[:50])
    expected = decades(LogRobustNormaliser.from_dict(old), scores.errors["ae2"])
    np.testing.assert_allclose(scores.parts["ae2"], expected, rtol=1e-3, atol=1e-3)
