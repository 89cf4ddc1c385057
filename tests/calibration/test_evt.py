"""SPOT and DSPOT: the GPD fit, false-alarm rates against their targets, drift, state."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from calibration.errors import CalibrationError, SnapshotError
from calibration.evt import Dspot, Spot, fit_gpd
from calibration.quantile import RollingQuantile


def stream(calibrator: Spot, scores: np.ndarray, batch: int = 4096, keys: np.ndarray | None = None):  # type: ignore[no-untyped-def]
    keys = np.zeros(len(scores), int) if keys is None else keys
    results = [
        calibrator.update(keys[i : i + batch], scores[i : i + batch])
        for i in range(0, len(scores), batch)
    ]
    return np.concatenate([r.thresholds for r in results]), np.concatenate(
        [r.flags for r in results]
    )


@pytest.mark.parametrize("xi", [-0.2, 0.0, 0.2, 0.4])
def test_pwm_fit_agrees_with_scipy_maximum_likelihood(xi: float) -> None:
    excesses = stats.genpareto.rvs(xi, scale=1.5, size=50_000, random_state=3)
    shape, scale = fit_gpd(excesses)
    mle_shape, _, mle_scale = stats.genpareto.fit(excesses, floc=0)
    assert shape == pytest.approx(mle_shape, abs=0.03)
    assert scale == pytest.approx(mle_scale, rel=0.03)


# Measured over 1e6 draws at the time of writing, as observed / target: exponential 1.32 (1e-3)
# and 1.23 (1e-4); Student-t with 5 degrees of freedom 1.41 (1e-3) and 1.45 (1e-4).
# Stated tolerance: the observed rate lies within [0.6, 1.7] times the target.
@pytest.mark.parametrize("target", [1e-3, 1e-4])
@pytest.mark.parametrize("tail", ["exponential", "student_t5"])
def test_false_alarm_rate_on_stationary_streams_is_near_the_target(
    tail: str, target: float
) -> None:
    rng = np.random.default_rng(11)
    scores = (
        rng.exponential(size=1_000_000) if tail == "exponential" else rng.standard_t(5, 1_000_000)
    )
    _, flags = stream(Spot(target_rate=target), scores)
    observed = flags[20_000:].mean()
    assert 0.6 * target <= observed <= 1.7 * target, f"{tail}: {observed:.2e} for {target:.0e}"


def test_dspot_follows_a_level_shift_within_depth_plus_a_refresh_block() -> None:
    rng = np.random.default_rng(0)
    shift_at, depth, refresh = 30_000, 50, 256
    scores = np.concatenate([rng.normal(size=shift_at), rng.normal(size=30_000) + 2.0])
    _, dspot_flags = stream(
        Dspot(depth=depth, target_rate=1e-3, refresh=refresh), scores, batch=512
    )
    _, spot_flags = stream(Spot(target_rate=1e-3, refresh=refresh), scores, batch=512)
    settled = shift_at + depth + 2 * refresh
    assert dspot_flags[settled : settled + 5000].mean() < 3e-3, "DSPOT adapted to the new level"
    assert (
        spot_flags[settled : settled + 1000].mean()
        > 10 * dspot_flags[settled : settled + 1000].mean()
    )
    assert dspot_flags[shift_at + 5000 :].mean() < 2.5e-3


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    cuts=st.lists(st.integers(1, 19_999), max_size=6),
    per_key=st.booleans(),
)
def test_flags_do_not_depend_on_batching(seed: int, cuts: list[int], per_key: bool) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.exponential(size=20_000)
    keys = rng.choice(["a", "b"], size=20_000)
    whole = Dspot(depth=20, target_rate=1e-3, window=2000, warmup=500, per_key=per_key)
    expected = whole.update(keys, scores)
    split = Dspot(depth=20, target_rate=1e-3, window=2000, warmup=500, per_key=per_key)
    pieces = [
        split.update(k, s)
        for k, s in zip(
            np.split(keys, sorted(set(cuts))), np.split(scores, sorted(set(cuts))), strict=True
        )
    ]
    np.testing.assert_array_equal(np.concatenate([p.flags for p in pieces]), expected.flags)
    np.testing.assert_array_equal(
        np.concatenate([p.thresholds for p in pieces]), expected.thresholds
    )


@pytest.mark.parametrize("make", [lambda: Spot(target_rate=1e-3), lambda: Dspot(target_rate=1e-3)])
def test_snapshot_restore_update_equals_update(make) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(5)
    scores, keys = rng.exponential(size=30_000), rng.choice(["x", "y", "z"], size=30_000)
    straight = make()
    expected = straight.update(keys, scores)
    first = make()
    head = first.update(keys[:17_000], scores[:17_000])
    second = make()
    second.restore(first.snapshot())
    tail = second.update(keys[17_000:], scores[17_000:])
    np.testing.assert_array_equal(
        np.concatenate([head.thresholds, tail.thresholds]), expected.thresholds
    )
    assert second.snapshot() == straight.snapshot()


def test_no_threshold_during_warm_up() -> None:
    result = Spot(target_rate=1e-3, warmup=1000).update(np.zeros(999, int), np.arange(999.0))
    assert np.isnan(result.thresholds).all() and not result.flags.any()


def test_snapshots_of_another_method_are_refused() -> None:
    spot = Spot(target_rate=1e-3)
    with pytest.raises(
        SnapshotError, match="snapshot of a 'spot' calibrator cannot restore a 'dspot'"
    ):
        Dspot().restore(spot.snapshot())
    with pytest.raises(SnapshotError, match="cannot restore a 'quantile'"):
        RollingQuantile().restore(spot.snapshot())


def test_parameters_are_checked() -> None:
    with pytest.raises(CalibrationError, match="below 1 - init_level"):
        Spot(target_rate=0.05)
    with pytest.raises(CalibrationError, match="must exceed depth"):
        Dspot(depth=500, warmup=100)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Spot(target_rate=1e-4, window=4000, warmup=1000, refresh=64),
        lambda: Dspot(target_rate=1e-4, window=4000, warmup=1000, refresh=64),
    ],
)
def test_a_long_anomaly_does_not_ratchet_the_threshold_up(make) -> None:  # type: ignore[no-untyped-def]
    """A level shift of 600 flagged scores, then calm, then a spike at twice the threshold in
    force before the shift: the spike is still caught and the threshold stays near its level."""
    rng = np.random.default_rng(5)
    calibrator = make()
    stream(calibrator, rng.exponential(size=6000), batch=256)
    before = calibrator.threshold()
    stream(calibrator, 40.0 + rng.exponential(size=600), batch=256)
    stream(calibrator, rng.exponential(size=1500), batch=256)
    after = calibrator.threshold()
    _, flags = stream(calibrator, np.array([2.0 * before]), batch=1)
    assert after < 1.5 * before, f"threshold {before:.2f} → {after:.2f} after the shift"
    assert flags[0], "an anomaly after the long one is caught"
