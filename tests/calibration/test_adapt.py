"""Adapting to a new regime (``adapt_after``): an entity more than half of whose last
``adapt_after`` scores were flagged takes them as its new normal, so a lasting level shift stops
alarming, while a shorter anomaly stays flagged and changes nothing.

What adapting owes restarts and batching (bit for bit) is in test_conformance.py; the rule and
the choice of the default are in docs/calibration.md ("Adapting to a new regime").
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from calibration import state
from calibration.base import Flags
from calibration.evt import Dspot, Spot
from calibration.quantile import RollingQuantile
from calibration.window import WindowCalibrator

W, WARMUP, REFRESH, ADAPT = 4000, 1000, 64, 1024
STOPS_WITHIN = ADAPT + 2 * REFRESH
"""Scores after a shift by which it must no longer be flagged: more than half of the last
``ADAPT`` are flagged ``ADAPT / 2 + 1`` scores after it, and the next refresh boundary adapts."""

TARGETS = {"quantile": 1e-2, "spot": 1e-3, "dspot": 1e-3}
"""Each method's wanted false-alarm rate below (the quantile's ``1 - q``)."""

Maker = Callable[..., WindowCalibrator]
MAKERS: dict[str, Maker] = {
    "quantile": lambda **o: RollingQuantile(0.99, window=W, warmup=WARMUP, refresh=REFRESH, **o),
    "spot": lambda **o: Spot(target_rate=1e-3, window=W, warmup=WARMUP, refresh=REFRESH, **o),
    "dspot": lambda **o: Dspot(target_rate=1e-3, window=W, warmup=WARMUP, refresh=REFRESH, **o),
}

_SHAPES: dict[str, Callable[[np.random.Generator, int], NDArray[np.float64]]] = {
    "exponential": lambda rng, n: rng.exponential(size=n),
    "abs_student_t3": lambda rng, n: np.abs(rng.standard_t(3, size=n)),
    "lognormal": lambda rng, n: rng.lognormal(0.0, 0.5, size=n),
}


def feed(
    calibrator: WindowCalibrator,
    scores: NDArray[np.float64],
    batch: int = 1000,
    keys: NDArray[np.str_] | None = None,
) -> Flags:
    """``update`` in batches of ``batch`` scores of key "k" (or of ``keys``); answers joined."""
    names = np.full(len(scores), "k") if keys is None else keys
    parts = [
        calibrator.update(names[i : i + batch], scores[i : i + batch])
        for i in range(0, len(scores), batch)
    ]
    return Flags(
        np.concatenate([np.empty(0)] + [p.thresholds for p in parts]),
        np.concatenate([np.empty(0, bool)] + [p.flags for p in parts]),
        np.concatenate([np.empty(0)] + [p.surprise for p in parts]),
    )


@pytest.mark.parametrize("method", sorted(MAKERS))
@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.sampled_from(sorted(_SHAPES)),
    before=st.integers(2 * WARMUP, 3 * W),
    level=st.floats(np.log(2.0), np.log(1e6)).map(np.exp),
    batch=st.sampled_from([97, 1000, 4096]),
)
def test_a_level_shift_stops_being_flagged_and_the_rate_returns_to_the_target(
    method: str, seed: int, shape: str, before: int, level: float, batch: int
) -> None:
    """Stationary scores, then the same shifted up by ``level`` (2 or more) times the threshold
    (so every shifted score starts out flagged), lasting 30,000 scores: flagged at first, then, from
    ``STOPS_WITHIN`` scores after the shift on, flagged at the method's target rate again (0.5
    to 2.5 times it; measured over 45 draws, 1.0 to 1.3 times for the quantile, 1.0 to 1.8 for
    SPOT and DSPOT, as on stationary streams). Derandomized: bounds with a margin over what
    draws reached, not over every conceivable draw."""
    rng = np.random.default_rng(seed)
    calibrator = MAKERS[method](adapt_after=ADAPT)
    feed(calibrator, _SHAPES[shape](rng, before), batch)
    shift = level * calibrator.threshold()
    flags = feed(calibrator, shift + _SHAPES[shape](rng, 30_000), batch).flags
    assert flags[: ADAPT // 4].all(), "the shift is flagged at first"
    rate = flags[STOPS_WITHIN:].mean() / TARGETS[method]
    assert 0.5 <= rate <= 2.5, rate
    assert calibrator.adaptations() == 1


@pytest.mark.parametrize("method", sorted(MAKERS))
def test_without_adapt_after_a_level_shift_stays_flagged_to_its_end(method: str) -> None:
    """``adapt_after`` 0 (the constructors' default) never adapts: flagged scores are never
    learned, so a shift that stays is flagged for ever, as before adapting existed."""
    rng = np.random.default_rng(1)
    calibrator = MAKERS[method]()
    feed(calibrator, rng.exponential(size=2 * W))
    assert feed(calibrator, 100.0 + rng.exponential(size=3 * W)).flags.all()
    assert calibrator.adaptations() == 0


@pytest.mark.parametrize("method", sorted(MAKERS))
@settings(max_examples=10, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    length=st.integers(1, ADAPT // 2 - 8),
    level=st.floats(np.log(2.0), np.log(1e6)).map(np.exp),
    batch=st.sampled_from([97, 1000, 4096]),
)
def test_a_burst_shorter_than_half_adapt_after_stays_flagged_and_changes_nothing(
    method: str, seed: int, length: int, level: float, batch: int
) -> None:
    """A burst of fewer than ``adapt_after / 2`` scores (less 8, room for the normal false
    alarms around it) never adapts: it is flagged to its last score, and every flag,
    threshold and surprise is the same as without adapting, bit for bit."""
    rng = np.random.default_rng(seed)
    before, burst = rng.exponential(size=2 * W), rng.exponential(size=length)
    after = rng.exponential(size=3 * ADAPT)
    runs = []
    for adapt_after in (0, ADAPT):
        calibrator = MAKERS[method](adapt_after=adapt_after)
        feed(calibrator, before, batch)
        burst += level * calibrator.threshold() * (adapt_after == 0)
        runs.append(feed(calibrator, np.concatenate([burst, after]), batch))
        assert calibrator.adaptations() == 0
    assert runs[1].flags[:length].all()
    np.testing.assert_array_equal(runs[1].flags, runs[0].flags)
    np.testing.assert_array_equal(runs[1].thresholds, runs[0].thresholds)
    np.testing.assert_array_equal(runs[1].surprise, runs[0].surprise)


def _keyed(rng: np.random.Generator, n: int, names: str) -> NDArray[np.str_]:
    return rng.choice(list(names), size=n)


@pytest.mark.parametrize("method", sorted(MAKERS))
def test_per_key_a_shift_on_one_key_adapts_that_key_only(method: str) -> None:
    """Four keys, one of which shifts for good: that key adapts (once) and stops alarming; the
    others and the global state (a quarter of whose scores are flagged) never adapt, and the
    others are flagged exactly as without adapting."""
    rng = np.random.default_rng(2)
    keys = _keyed(rng, 20_000 + 40_000, "abcd")
    scores = rng.exponential(size=len(keys))
    scores[20_000:] += 100.0 * (keys[20_000:] == "a")
    runs = []
    for adapt_after in (0, ADAPT):
        calibrator = MAKERS[method](adapt_after=adapt_after, per_key=True)
        runs.append(feed(calibrator, scores, 3000, keys))
    assert [calibrator.adaptations(k) for k in (None, "a", "b", "c", "d")] == [0, 1, 0, 0, 0]
    others = keys != "a"
    np.testing.assert_array_equal(runs[1].flags[others], runs[0].flags[others])
    shifted = runs[1].flags[20_000:][keys[20_000:] == "a"]
    assert shifted[: ADAPT // 4].all() and runs[0].flags[20_000:][keys[20_000:] == "a"].all()
    assert shifted[STOPS_WITHIN:].mean() <= 2.5 * TARGETS[method]


@pytest.mark.parametrize("method", sorted(MAKERS))
def test_a_new_key_above_the_global_threshold_gets_a_threshold_of_its_own(method: str) -> None:
    """Per key, a key still warming up is judged by the global threshold and learns only what
    it does not flag; a new key whose scores all lie above it never warmed up and was flagged
    for ever. Adapting, it takes its first ``adapt_after`` scores as its normal at its first
    refresh boundary after them, and keeps a threshold of its own at every later refresh, though
    it has accepted fewer than ``warmup`` scores."""
    rng = np.random.default_rng(3)
    old_keys = _keyed(rng, 12_000, "abc")
    keys = np.concatenate([old_keys, rng.choice(list("abcn"), 40_000, p=[0.3, 0.3, 0.3, 0.1])])
    scores = rng.exponential(size=len(keys)) + 30.0 * (keys == "n")
    for adapt_after in (0, ADAPT):
        calibrator = MAKERS[method](adapt_after=adapt_after, per_key=True)
        new = feed(calibrator, scores, 2048, keys).flags[keys == "n"]
        if not adapt_after:
            assert new.all() and calibrator.threshold("n") == calibrator.threshold()
            continue
        assert new[:ADAPT].all()
        assert new[ADAPT:].mean() <= 2.5 * TARGETS[method]
        assert calibrator.adaptations("n") == 1 and calibrator.adaptations() == 0
        assert 30.0 < calibrator.threshold("n") != calibrator.threshold()


def test_an_adapted_window_starts_at_the_first_flagged_score() -> None:
    """The accepted scores before the earliest flagged one among the last ``adapt_after``
    belong to the old regime and are dropped; so are the censoring points and the kept flagged
    scores. The state records when the entity adapted and how often."""
    rng = np.random.default_rng(4)
    spot = MAKERS["spot"](adapt_after=ADAPT)
    before = 5_000 - 5_000 % REFRESH
    feed(spot, rng.exponential(size=before))
    seen = before
    while not spot.adaptations():
        assert feed(spot, 50.0 + rng.exponential(size=REFRESH)).flags.all()
        seen += REFRESH
    assert seen == before + ADAPT // 2 + REFRESH, "the first boundary past half"
    fields = state.unpack(spot.snapshot(), "spot")[1][state.GLOBAL]
    np.testing.assert_array_equal(fields["seen_at"], np.arange(before, seen))
    assert (fields["window"] > 50.0).all()
    assert len(fields["cuts"]) == len(fields["flagged"]) == 0
    np.testing.assert_array_equal(fields["adapted"], [seen, 1])
    assert spot.threshold() > 50.0


def test_an_entity_that_cannot_fit_after_adapting_waits_like_a_warming_one() -> None:
    """SPOT needs 50 scores to fit a tail (10 peaks over its lowest initial level, 0.8); an
    adapted window of at most 32 scores has fewer. The entity then has no threshold (no flag: a
    global state has no fallback), learns every score, and fits one at the first refresh that
    can, at the new level."""
    rng = np.random.default_rng(5)
    spot = Spot(target_rate=1e-3, window=W, warmup=WARMUP, refresh=16, adapt_after=32)
    feed(spot, rng.exponential(size=3_000))
    result = feed(spot, 50.0 + rng.exponential(size=3_000), batch=64)
    adapted = int(np.flatnonzero(~result.flags)[0])
    assert np.isnan(result.thresholds[adapted]) and spot.adaptations() == 1
    own = np.flatnonzero(np.isfinite(result.thresholds[adapted:]))
    assert len(own) and result.thresholds[adapted + own[0]] > 50.0
    assert result.flags[adapted:].mean() < 0.01


def test_a_short_adapted_window_fits_from_a_lower_level() -> None:
    """An adapted window of about 160 scores holds 3 peaks over 0.98, too few to fit; the
    initial level is lowered so that it holds 12 (``Spot.base_level``), and the entity has a
    threshold above the new regime's body at once."""
    rng = np.random.default_rng(5)
    spot = Spot(target_rate=1e-3, window=W, warmup=WARMUP, refresh=REFRESH, adapt_after=256)
    feed(spot, rng.exponential(size=3_000))
    result = feed(spot, 50.0 + rng.exponential(size=3_000), batch=64)
    adapted = int(np.flatnonzero(~result.flags)[0])
    assert spot.adaptations() == 1
    assert result.thresholds[adapted] > 50.0
    assert result.flags[adapted:].mean() < 0.01


def test_each_lasting_shift_adapts_once() -> None:
    """Two shifts in turn, each lasting: one adaptation each, counted in the state. A
    calibrator never adapts twice within ``adapt_after`` scores."""
    rng = np.random.default_rng(6)
    spot = MAKERS["spot"](adapt_after=ADAPT)
    feed(spot, rng.exponential(size=3_000))
    feed(spot, 100.0 + rng.exponential(size=3_000))
    assert spot.adaptations() == 1
    feed(spot, 1e4 + rng.exponential(size=3_000))
    assert spot.adaptations() == 2
    assert spot.adaptations("never seen") == 0


def test_adapt_after_enters_the_parameters() -> None:
    """A snapshot taken under another ``adapt_after`` is re-thresholded like one under another
    level; the constructors' default is 0, so a library caller opts in."""
    assert MAKERS["spot"]().params()["adapt_after"] == 0
    assert MAKERS["quantile"](adapt_after=ADAPT).params()["adapt_after"] == ADAPT
