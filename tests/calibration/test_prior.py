"""Calibrators started from a model's held-out scores (``WindowCalibrator.start_from``): every
entity judged from its first score, warm-ups that learn every score, the prior out of the way
once an entity has its own threshold, and what is refused. Restarts and batching with a prior
are covered by the conformance suite (its ``-started`` kinds)."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.errors import CalibrationError
from calibration.evt import Dspot, Spot, first_fit_after
from calibration.quantile import RollingQuantile
from calibration.window import WindowCalibrator

MAKERS = {
    "quantile": lambda: RollingQuantile(0.99, window=2000, warmup=1000, refresh=64, per_key=True),
    "spot": lambda: Spot(1e-3, window=2000, warmup=1000, refresh=64, per_key=True),
    "dspot": lambda: Dspot(
        depth=20, target_rate=1e-3, window=2000, warmup=1000, refresh=64, per_key=True
    ),
}


@pytest.fixture(params=list(MAKERS))
def make(request: pytest.FixtureRequest) -> object:
    return MAKERS[request.param]


def prior(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).exponential(size=n)


def test_every_entity_has_a_threshold_from_its_first_score(make) -> None:  # type: ignore[no-untyped-def]
    """118 held-out scores (a NAB file's) judge the global state until it has warmed up on
    1,000 of its own, and so the keys judged by it; then the keys still warming are judged by
    the global threshold, and a key with 1,000 of its own by its own."""
    calibrator: WindowCalibrator = make()
    calibrator.start_from(prior(118))
    assert calibrator.started and np.isfinite(calibrator.threshold())
    first = calibrator.update(["a", "b"], [0.5, 50.0])
    assert np.isfinite(first.thresholds).all() and not np.isnan(first.surprise).any()
    assert first.flags.tolist() == [False, True]
    calibrator.update(np.repeat(["a"], 3000), 0.1 * prior(3000, seed=1))
    late = calibrator.update(["late"], [0.5])
    assert late.thresholds[0] == calibrator.threshold(None) != first.thresholds[1]
    assert calibrator.threshold("a") < first.thresholds[0] / 2, "a has its own threshold"


def test_a_warm_up_judged_by_a_prior_learns_every_score() -> None:
    """A prior far below the stream's scores flags much of the warm-up; those scores are
    learned all the same, so the threshold after the warm-up is the one a calibrator without
    a prior fits (global: the same thresholds from then on, bit for bit)."""
    stream = 10.0 * prior(3000, seed=4)
    started = Spot(1e-3, window=2000, warmup=1000, refresh=64)
    started.start_from(prior(118))
    plain = Spot(1e-3, window=2000, warmup=1000, refresh=64)
    with_prior, without = (
        started.update(np.zeros(3000), stream),
        plain.update(np.zeros(3000), stream),
    )
    assert with_prior.flags[:1000].mean() > 0.3, "the prior flags the louder warm-up"
    after = np.flatnonzero(np.isfinite(without.thresholds))
    assert after[0] <= 1024
    np.testing.assert_array_equal(with_prior.thresholds[after], without.thresholds[after])
    assert with_prior.flags[after].mean() < 0.01


def test_a_prior_too_short_to_fit_from_is_not_used() -> None:
    """SPOT fits from 50 scores at the least; a shorter prior leaves the usual warm-up."""
    spot = Spot(1e-3, window=2000, warmup=100, refresh=50)
    spot.start_from(prior(first_fit_after() // 2))
    assert not spot.started
    assert np.isnan(spot.update(np.zeros(10), prior(10)).thresholds).all()


def test_a_prior_comes_before_any_score_and_is_finite() -> None:
    spot = Spot(1e-3, window=2000, warmup=100, refresh=50)
    with pytest.raises(CalibrationError, match="finite"):
        spot.start_from([1.0, np.inf] * 40)
    spot.update(["k"], [1.0])
    with pytest.raises(CalibrationError, match="before the first update"):
        spot.start_from(prior(100))


def test_a_snapshot_restores_into_a_calibrator_with_a_prior() -> None:
    """A checkpoint written by a daemon without a prior (an older bundle) restores into one
    with a prior: the keys that had warmed up keep their thresholds, bit for bit."""
    before = Spot(1e-3, window=2000, warmup=1000, refresh=64, per_key=True)
    before.update(np.repeat(["k"], 1500), prior(1500, seed=3))
    after = Spot(1e-3, window=2000, warmup=1000, refresh=64, per_key=True)
    after.start_from(prior(118))
    after.restore(before.snapshot())
    assert after.threshold("k") == before.threshold("k")
    assert after.keys == ["k"]
