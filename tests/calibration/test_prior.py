"""Calibrators started from a model's held-out scores (``WindowCalibrator.start_from``): every
entity judged from its first score, warm-ups that learn every score, the prior out of the way
once an entity has its own threshold, and what is refused. Restarts and batching with a prior
are covered by the conformance suite (its ``-started`` kinds)."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.base import Flags
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
    """118 held-out scores (a NAB file's) judge every key until it has warmed up on 1,000 of
    its own, even once the global state has (a key is never judged by the others' scores);
    then a key is judged by its own threshold."""
    calibrator: WindowCalibrator = make()
    calibrator.start_from(prior(118))
    assert calibrator.started and np.isfinite(calibrator.threshold())
    first = calibrator.update(["a", "b"], [0.5, 50.0])
    assert np.isfinite(first.thresholds).all() and not np.isnan(first.surprise).any()
    assert first.flags.tolist() == [False, True]
    calibrator.update(np.repeat(["a"], 3000), 0.1 * prior(3000, seed=1))
    late = calibrator.update(["late"], [0.5])
    assert calibrator.threshold(None) != first.thresholds[1], "the global state warmed up"
    assert late.thresholds[0] == first.thresholds[1] == calibrator.threshold("late")
    assert late.surprise[0] == calibrator.update(["b"], [0.5]).surprise[0]
    assert calibrator.threshold("a") < first.thresholds[0] / 2, "a has its own threshold"


@pytest.mark.parametrize("seed", range(5))
def test_with_a_prior_the_interleaving_of_keys_changes_nothing(make, seed: int) -> None:  # type: ignore[no-untyped-def]
    """Per key with a prior, a key's thresholds, flags and surprise depend only on its own
    scores: four keys (a daemon's four partitions) read partition by partition, or interleaved
    at random in random batches, give every score the same judgement bit for bit."""
    rng = np.random.default_rng(seed)
    keys = np.repeat(np.array(["p0", "p1", "p2", "p3"]), 1500)
    scale = np.array([1.0, 3.0, 0.2, 10.0])[np.searchsorted(["p0", "p1", "p2", "p3"], keys)]
    scores = scale * rng.exponential(size=len(keys))
    scores[rng.choice(len(keys), 40, replace=False)] *= 30
    by_partition: WindowCalibrator = make()
    by_partition.start_from(prior(500, seed=seed))
    first = by_partition.update(keys, scores)
    shuffled = _interleave(rng, keys)
    interleaved: WindowCalibrator = make()
    interleaved.start_from(prior(500, seed=seed))
    cuts = np.sort(rng.choice(np.arange(1, len(keys)), 12, replace=False))
    parts = [interleaved.update(keys[p], scores[p]) for p in np.split(shuffled, cuts)]
    flags = _in_stream_order(shuffled, parts)
    np.testing.assert_array_equal(flags[0], first.thresholds)
    np.testing.assert_array_equal(flags[1], first.flags)
    np.testing.assert_array_equal(flags[2], first.surprise)
    assert first.flags.sum() > 0


def _interleave(rng: np.random.Generator, keys: np.ndarray) -> np.ndarray:
    """Positions (n,) of a random interleaving of ``keys`` that keeps each key's own order."""
    draws = keys[rng.permutation(len(keys))]
    positions = {k: iter(np.flatnonzero(keys == k).tolist()) for k in np.unique(keys)}
    return np.array([next(positions[k]) for k in draws])


def _in_stream_order(positions: np.ndarray, parts: list[Flags]) -> tuple[np.ndarray, ...]:
    """The thresholds, flags and surprise of ``parts`` (judged in the order ``positions``)
    put back at those positions."""
    judged = [
        np.concatenate([getattr(p, name) for p in parts])
        for name in ("thresholds", "flags", "surprise")
    ]
    out = []
    for values in judged:
        placed = np.empty_like(values)
        placed[positions] = values
        out.append(placed)
    return tuple(out)


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
