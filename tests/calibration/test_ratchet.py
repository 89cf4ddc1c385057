"""SPOT and DSPOT after long anomalies: the threshold must not ratchet up refresh after refresh
until it sits above every score it will see, and must come back once the scores do.

The mechanism and the measurements behind the bounds are in docs/calibration.md ("The
ratchet"). Before the fix, ``test_a_few_flagged_scores_do_not_ratchet_the_threshold_up`` saw the
threshold grow 1,740-fold (5.8 → 9,593 on the SKAB series it mimics) and the property below failed
21 times in 400 random draws, by up to 227 times.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from calibration import state
from calibration.evt import Dspot, Spot, fit_gpd, impute

_SHAPES = {
    "exponential": lambda rng, n: rng.exponential(size=n),
    "abs_student_t3": lambda rng, n: np.abs(rng.standard_t(3, size=n)),  # heavy tail, xi = 1/3
    "lognormal": lambda rng, n: rng.lognormal(0.0, 0.5, size=n),
}


def feed(calibrator: Spot, scores: NDArray[np.float64], batch: int = 4096) -> NDArray[np.float64]:
    """The thresholds in force for ``scores`` of one key, fed in batches."""
    keys = np.zeros(len(scores), int)
    return np.concatenate(
        [np.empty(0)]
        + [
            calibrator.update(keys[i : i + batch], scores[i : i + batch]).thresholds
            for i in range(0, len(scores), batch)
        ]
    )


@pytest.mark.parametrize("seed", range(20))
def test_a_few_flagged_scores_do_not_ratchet_the_threshold_up(seed: int) -> None:
    """The SKAB case: a short warm-up (384 scores, 12 peaks), then a 265-score anomaly clustered
    just under the threshold, so that a few of its scores are flagged (no more than the normal
    tail explains, so they count as censored peaks) and the rest are accepted, then normal
    scores again. Censored at the threshold in force at each refresh, the same few flagged
    scores were imputed further out every time: seed 19 went 11.5 → 19,400 in 14 refreshes.
    Measured now: at most 1.62 times the threshold before, over these seeds."""
    rng = np.random.default_rng(seed)
    warmup = 384
    spot = Spot(
        target_rate=1e-3, init_level=1 - 12 / warmup, window=10_000, warmup=warmup, refresh=64
    )
    feed(spot, np.abs(rng.standard_t(3, size=warmup + 320)))
    before = spot.threshold()
    anomaly = 0.9 * before * np.exp(0.1 * rng.normal(size=265))
    during = feed(spot, anomaly, batch=64)
    after = feed(spot, np.abs(rng.standard_t(3, size=8 * 64)), batch=64)
    assert np.concatenate([during, after]).max() < 2.0 * before


def test_flagged_scores_are_censored_at_the_threshold_that_flagged_them() -> None:
    """The state keeps, for each flagged score, the threshold in force when it was flagged and
    when it came (its seen count): later refreshes cannot move where it was censored."""
    rng = np.random.default_rng(1)
    spot = Spot(target_rate=1e-3, window=2000, warmup=500, refresh=50)
    feed(spot, rng.exponential(size=3000))
    scores = rng.exponential(size=1000)
    scores[[100, 480, 900]] = 50.0
    result = spot.update(np.zeros(1000, int), scores)
    flagged = np.flatnonzero(result.flags)
    assert {100, 480, 900} <= set(flagged.tolist())
    assert len(set(result.thresholds[flagged].tolist())) > 1, "flagged under several thresholds"
    _, entities = state.unpack(spot.snapshot(), "spot")
    fields = entities[state.GLOBAL]
    kept = min(len(flagged), spot.censor_capacity())
    np.testing.assert_array_equal(fields["cuts"][-kept:], result.thresholds[flagged][-kept:])
    np.testing.assert_array_equal(fields["cut_at"][-kept:], 3000 + flagged[-kept:])


@settings(max_examples=200, deadline=None)
@given(
    excesses=st.lists(st.floats(1e-6, 1e6), min_size=2, max_size=60).map(np.array),
    cut=st.floats(0.0, 1e3),
)
def test_the_fitted_shape_stays_below_one_and_imputation_stays_bounded(
    excesses: NDArray[np.float64], cut: float
) -> None:
    """PWM's shape is ``2 - a0 / (a0 - 2 a1)`` with ``a1 > 0``: always below 1, but it nears 1
    when a few excesses dwarf the rest, and the mean residual life ``(sigma + xi c) / (1 - xi)``
    then explodes. The imputation computes it with the shape capped at 1/2."""
    xi, sigma = fit_gpd(excesses)
    assert xi < 1.0 and sigma > 0.0
    imputed = impute(np.array([cut]), xi, sigma)[0]
    assert cut <= imputed <= 3.0 * cut + 2.0 * sigma + 1e-9 * (cut + sigma)


W, WARMUP, REFRESH, TARGET, INIT_LEVEL = 1000, 500, 50, 1e-3, 0.97
RISE = 4.0
"""How far above its level before the anomaly the threshold may ever go (a factor). Up to the
allowance of flagged scores (11 here) count as censored normal peaks by design, so a burst of 11
scores far above the threshold raises the fitted tail for one window: with |t3| scores, 1.32
times at the median and 3.13 at worst over 1,000 seeds. Over 400 random anomalies the worst was
1.72; before the fix, 227."""
BACK = 3.0
"""How near its level before the threshold must be once the anomaly has left the window (a
factor either way). The threshold's own wandering over a window turnover at these settings (30
peaks) reaches 2.0 on a stationary stream (p99 1.8), 2.6 after the burst above over 1,000 seeds;
2.06 at worst over 400 random anomalies."""
BACK_WITHIN = W // REFRESH + 2
"""Refreshes after the anomaly: one window turnover, after which nothing of it is left in the
window, plus two."""


@pytest.mark.parametrize(
    ("make", "level_shift"),
    [(Spot, False), (Dspot, True)],
    ids=["spot-clustered", "dspot-level-shift"],
)
@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.sampled_from(sorted(_SHAPES)),
    length=st.integers(1, 3 * W),
    # Half around the threshold, where the anomaly is partly accepted, half anywhere above.
    level=st.one_of(st.floats(0.5, 1.5), st.floats(np.log(0.5), np.log(1e6)).map(np.exp)),
    spread=st.floats(0.0, 0.3),
)
def test_after_a_long_anomaly_the_threshold_comes_back(
    make: type[Spot],
    level_shift: bool,
    seed: int,
    shape: str,
    length: int,
    level: float,
    spread: float,
) -> None:
    """Any length (1 to three windows), any level (half the threshold to a million times it):
    the threshold never rises above ``RISE`` times its level before, and is back within
    ``BACK`` of it ``BACK_WITHIN`` refreshes after the anomaly. SPOT sees scores clustered at
    ``level`` times the threshold (``spread``: lognormal sigma); DSPOT, which follows the
    baseline by design, sees normal scores shifted up by ``level`` times the threshold, and its
    rise is judged against that shifted level. Derandomized: the bounds leave a margin over
    what 1,000s of draws reached (see ``RISE``), not over every conceivable draw.

    Not covered (docs/calibration.md): a long stretch *quieter* than normal (a frozen sensor,
    or, for DSPOT, one with less variance) lowers the threshold, after which normal scores are
    flagged above the allowance and never learned."""
    rng = np.random.default_rng(seed)
    calibrator = make(
        target_rate=TARGET, window=W, warmup=WARMUP, refresh=REFRESH, init_level=INIT_LEVEL
    )
    feed(calibrator, _SHAPES[shape](rng, 2 * W))
    before = calibrator.threshold()
    if level_shift:
        anomaly = _SHAPES[shape](rng, length) + level * before
    else:
        anomaly = level * before * np.exp(spread * rng.normal(size=length))
    ceiling = RISE * before * (1.0 + level if level_shift else 1.0)
    assert np.nanmax(feed(calibrator, anomaly)) <= ceiling
    later = []
    for _ in range(BACK_WITHIN + 3):
        thresholds = feed(calibrator, _SHAPES[shape](rng, REFRESH))
        assert thresholds.max() <= ceiling
        later.append(calibrator.threshold() / before)
    settled = np.array(later[BACK_WITHIN:])
    assert (settled <= BACK).all() and (settled >= 1.0 / BACK).all(), later


@pytest.mark.parametrize("length", [2_000, 20_000])
def test_the_censored_peaks_an_anomaly_leaves_do_not_grow_with_its_length(length: int) -> None:
    """Past the allowance, only the normal exceedances expected among the *accepted* scores
    count as censored peaks; counting those expected among every score seen grew with the
    anomaly (a 20,000-score one at 1e-3 counted 20)."""
    rng = np.random.default_rng(4)
    spot = Spot(target_rate=1e-3, window=W, warmup=WARMUP, refresh=REFRESH)
    feed(spot, rng.exponential(size=2 * W))
    before = spot.threshold()
    feed(spot, 100.0 + rng.exponential(size=length))
    assert spot.threshold() == pytest.approx(before, rel=0.05)
