"""The anomaly-likelihood calibrator (``calibration.likelihood``): what a backtest, a restart and
a fetch order owe it (the same flags, thresholds and surprise bit for bit), and what it is for
(a spike is flagged, a lasting level shift stops alarming by itself)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from scipy.stats import norm

from calibration import state
from calibration.base import Flags
from calibration.errors import CalibrationError, SnapshotError
from calibration.likelihood import Likelihood
from streamer.calibrators import build_calibrator, calibrator_description
from streamer.config import CalibrationConfig

WINDOW, WARMUP, REFRESH, SMOOTH = 200, 40, 16, 5


def make(per_key: bool = True, prior: NDArray[np.float64] | None = None) -> Likelihood:
    calibrator = Likelihood(1e-3, WINDOW, WARMUP, REFRESH, SMOOTH, per_key=per_key)
    if prior is not None:
        calibrator.start_from(prior)
    return calibrator


def stream(seed: int, n: int = 900, keys: int = 3) -> tuple[NDArray[np.str_], NDArray[np.float64]]:
    rng = np.random.default_rng(seed)
    names = np.array([f"k{i}" for i in rng.integers(0, keys, n)])
    scores = rng.gamma(2.0, 1.0, n)
    scores[rng.integers(0, n, 6)] += 25.0
    return names, scores


def feed(
    calibrator: Likelihood, keys: NDArray[np.str_], scores: NDArray[np.float64], cuts: list[int]
) -> Flags:
    parts, start = [], 0
    for stop in [*sorted(cuts), len(scores)]:
        parts.append(calibrator.update(keys[start:stop], scores[start:stop]))
        start = stop
    return Flags(
        np.concatenate([p.thresholds for p in parts]),
        np.concatenate([p.flags for p in parts]),
        np.concatenate([p.surprise for p in parts]),
    )


def assert_same(actual: Flags, expected: Flags) -> None:
    np.testing.assert_array_equal(actual.thresholds, expected.thresholds)
    np.testing.assert_array_equal(actual.flags, expected.flags)
    np.testing.assert_array_equal(actual.surprise, expected.surprise)


PRIOR = np.random.default_rng(7).gamma(2.0, 1.0, 120)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(1, 899), max_size=12, unique=True),
    per_key=st.booleans(),
    with_prior=st.booleans(),
)
def test_batching_changes_nothing_bit_for_bit(
    seed: int, cuts: list[int], per_key: bool, with_prior: bool
) -> None:
    keys, scores = stream(seed)
    prior = PRIOR if with_prior else None
    whole = feed(make(per_key, prior), keys, scores, [])
    assert_same(feed(make(per_key, prior), keys, scores, cuts), whole)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(1, 899), with_prior=st.booleans())
def test_a_restart_from_a_snapshot_changes_nothing(seed: int, cut: int, with_prior: bool) -> None:
    keys, scores = stream(seed)
    prior = PRIOR if with_prior else None
    whole = feed(make(prior=prior), keys, scores, [])
    before = make(prior=prior)
    first = before.update(keys[:cut], scores[:cut])
    after = make(prior=prior)
    after.restore(before.snapshot())
    second = after.update(keys[cut:], scores[cut:])
    assert_same(
        Flags(
            np.concatenate([first.thresholds, second.thresholds]),
            np.concatenate([first.flags, second.flags]),
            np.concatenate([first.surprise, second.surprise]),
        ),
        whole,
    )


def test_a_snapshot_saved_before_running_sums_is_refitted_on_restore() -> None:
    # Earlier releases saved (seen, mean, spread); such a key resumes from an exact fit of its
    # history, as if a refit fell on the restore.
    keys, scores = stream(4, keys=1)
    saved = make()
    saved.update(keys[:500], scores[:500])
    (fields,) = state.unpack(saved.snapshot(), "likelihood")[1].values()
    old = {**fields, "counts": np.array([500.0, 1.0, 1.0])}
    restored = make()
    restored.restore(state.pack("likelihood", saved.params(), {"k0": old}))
    history = fields["history"]
    limit = history.mean() + norm.isf(1e-3) * history.std(ddof=1)
    expected = SMOOTH * limit - fields["recent"][1:].sum()
    assert restored.threshold("k0") == pytest.approx(expected, rel=1e-12)
    assert restored.update(keys[500:], scores[500:]).flags.sum() >= 1  # its spikes still flag


def test_each_key_is_judged_by_its_own_history_whatever_the_interleaving() -> None:
    keys, scores = stream(3, n=1200, keys=4)
    interleaved = make(prior=PRIOR).update(keys, scores)
    by_key = make(prior=PRIOR)
    order = np.argsort(keys, kind="stable")
    grouped = by_key.update(keys[order], scores[order])
    np.testing.assert_array_equal(grouped.thresholds, interleaved.thresholds[order])
    np.testing.assert_array_equal(grouped.surprise, interleaved.surprise[order])


def test_the_flag_is_the_tail_probability_of_the_moving_average() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(5.0, 1.0, 400)
    calibrator = make()
    flags = calibrator.update(np.full(400, "k"), scores)
    # The first fit comes at the first refresh boundary holding WARMUP moving averages.
    first_fit = (WARMUP + REFRESH - 1) // REFRESH * REFRESH
    assert np.isnan(flags.thresholds[:first_fit]).all()
    assert not flags.flags[:first_fit].any()
    history = pd_moving_average(scores)[:first_fit]
    z = (pd_moving_average(scores)[first_fit] - history.mean()) / history.std(ddof=1)
    assert flags.surprise[first_fit] == pytest.approx(-np.log10(norm.sf(z)), rel=1e-9)
    limit = history.mean() + norm.isf(1e-3) * history.std(ddof=1)
    expected = SMOOTH * limit - scores[first_fit - SMOOTH + 1 : first_fit].sum()
    assert flags.thresholds[first_fit] == pytest.approx(expected, rel=1e-9)
    assert np.array_equal(flags.flags, scores > flags.thresholds)


def test_each_average_is_judged_by_the_fit_of_every_average_before_it() -> None:
    # Between the exact refits every REFRESH scores the fit follows each score through running
    # sums; past WINDOW averages, each one added pushes the oldest out. Spikes of +25 make the
    # sums of squares move by hundreds, so rounding would show if it built up.
    _, scores = stream(11, n=900, keys=1)
    flags = make().update(np.full(len(scores), "k"), scores)
    averages = pd_moving_average(scores)
    first_fit = (WARMUP + REFRESH - 1) // REFRESH * REFRESH
    for i in range(first_fit, len(scores)):
        history = averages[max(0, i - WINDOW) : i]
        limit = history.mean() + norm.isf(1e-3) * history.std(ddof=1)
        expected = SMOOTH * limit - scores[i - SMOOTH + 1 : i].sum()
        assert flags.thresholds[i] == pytest.approx(expected, rel=1e-9), i


def pd_moving_average(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    sums = np.convolve(scores, np.ones(SMOOTH))[: len(scores)]
    return sums / np.minimum(np.arange(1, len(scores) + 1), SMOOTH)


def test_a_spike_is_flagged_and_a_lasting_shift_stops_alarming() -> None:
    rng = np.random.default_rng(2)
    calm = rng.normal(2.0, 0.3, 600)
    shifted = rng.normal(6.0, 0.3, 1200)
    scores = np.concatenate([calm, shifted])
    scores[300] += 8.0
    flags = make().update(np.full(len(scores), "k"), scores).flags
    assert flags[300:305].any()
    assert flags[600:620].any()  # the shift is news when it comes...
    # ...and normal once it fills the history: flagged at about the target rate (1e-3) then.
    assert flags[600 + WINDOW :].sum() <= 3


def test_the_prior_judges_from_the_first_score() -> None:
    flags = make(prior=PRIOR).update(np.array(["new"] * 3), np.array([1.0, 2.0, 60.0]))
    assert not np.isnan(flags.thresholds).any()
    assert flags.flags[2]


def test_max_keys_drops_the_least_recently_seen() -> None:
    calibrator = make(prior=PRIOR)
    calibrator.max_keys = 2
    for name in ("a", "b", "c", "b", "d"):
        calibrator.update(np.array([name] * 3), np.ones(3))
    assert calibrator.keys == ["b", "d"]
    assert calibrator.evicted == 2


def test_built_from_the_config_and_described_in_alerts() -> None:
    config = CalibrationConfig(method="likelihood", smooth=4, warmup=50, refresh=32)
    calibrator = build_calibrator(config, PRIOR)
    assert isinstance(calibrator, Likelihood) and calibrator.started
    assert calibrator.smooth == 4 and calibrator.max_keys == config.max_keys
    assert calibrator_description(config) == {
        "method": "likelihood",
        "target_rate": config.target_rate,
        "smooth": 4,
    }
    assert not build_calibrator(config.model_copy(update={"from_held_out": False}), PRIOR).started


def test_bad_input_and_bad_snapshots_are_refused() -> None:
    with pytest.raises(CalibrationError, match="smooth"):
        Likelihood(1e-3, WINDOW, WARMUP, REFRESH, 0)
    calibrator = make()
    with pytest.raises(CalibrationError, match="NaN"):
        calibrator.update(np.array(["k"]), np.array([np.nan]))
    with pytest.raises(SnapshotError):
        calibrator.restore(b"not a snapshot")
    spot = build_calibrator(CalibrationConfig(method="spot"))
    with pytest.raises(SnapshotError, match="likelihood"):
        calibrator.restore(spot.snapshot())


def test_pooled_state_travels_with_any_keys_snapshot() -> None:
    keys, scores = stream(5)
    pooled = make(per_key=False)
    pooled.update(keys, scores)
    restored = make(per_key=False)
    restored.restore(pooled.snapshot(["k0"]))
    assert restored.threshold("k1") == pooled.threshold("k1")
    restored.restore(pooled.snapshot(), with_global=False)
    assert restored.keys == [""]
